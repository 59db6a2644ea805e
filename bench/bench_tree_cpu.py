"""CPU per request in one process (time.process_time, Flask test client, no HTTP server): create,
read by id, identifier search; for comparing two trees of the code on the same machine in one sitting.

    for tree in /tmp/before /tmp/after; do            # e.g. git archive <commit> | tar -x -C /tmp/before
      export COORDINATION_DATABASE_URL=sqlite:///$tree.db COORDINATION_SECURITY_DISABLED=1
      (cd $tree && PYTHONPATH=$tree python -m coordination_api.cli db upgrade >/dev/null)
      (cd $tree && PYTHONPATH=$tree python /path/to/bench/bench_tree_cpu.py $tree)
    done

Security is off (the token check is the same in both trees and measured by bench_core.py); reads are
audited synchronously. Alternate the trees and repeat: the figures are for comparing, not absolute.
"""

import json
import sys
import time
from typing import Any

from coordination_api.app import create_app
from coordination_api.config import Settings

IPP = "urn:oid:1.2.250.1.71.4.2.7.750100125"
HEADERS = {"Content-Type": "application/fhir+json"}


def patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": f"Martin{i}", "given": ["Jeanne"]}],
        "birthDate": "1950-01-01",
        "identifier": [{"system": IPP, "value": f"IPP{i}"}],
    }


def main() -> None:
    client = create_app(Settings.from_env()).test_client()
    for i in range(20):  # warm-up: the first requests build the models
        assert client.post("/fhir/Patient", json=patient(-i), headers=HEADERS).status_code == 201
    ids = []
    started = time.process_time()
    for i in range(300):
        answer = client.post("/fhir/Patient", json=patient(i), headers=HEADERS)
        assert answer.status_code == 201, answer.get_data()
        ids.append(answer.get_json()["id"])
    create = (time.process_time() - started) / 300 * 1000
    started = time.process_time()
    for k in range(1500):
        assert client.get(f"/fhir/Patient/{ids[k % 300]}").status_code == 200
    read = (time.process_time() - started) / 1500 * 1000
    started = time.process_time()
    for k in range(500):
        assert client.get(f"/fhir/Patient?identifier={IPP}|IPP{k % 300}").status_code == 200
    search = (time.process_time() - started) / 500 * 1000
    figures = {"create_ms": round(create, 3), "read_ms": round(read, 3), "search_ms": round(search, 3)}
    print(json.dumps({"tree": sys.argv[1] if len(sys.argv) > 1 else ".", **figures}))


if __name__ == "__main__":
    main()
