#!/bin/sh
# The cercle de soins: a patient's CareTeam, with its usual nurse and its coordinator
# (role coordinateur-parcours: the escalation target of unaccepted Tasks). Every practitioner's read of
# a patient depends on such a CareTeam (an active one whose period covers now).
# careteam-bundle.json is a transaction: the Patient is created unless one has its INS (ifNoneExist),
# the CareTeam is a conditional update on its identifier (created once, updated afterwards), and the
# members are conditional references to Practitioners by RPPS (Practitioner?identifier=...): here
# 10000000601 and 10000000602, which must exist (e.g. created with `coordination users create --rpps`).
# Environment: BASE_URL, CLIENT_ID, CLIENT_SECRET (examples/README.md). Needs curl and jq.
set -eu
BASE_URL=${BASE_URL:-http://127.0.0.1:8080}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

call() {  # call EXPECTED_STATUS curl-arguments...: the body is left in $OUT
    expected=$1
    shift
    status=$(curl -sS -o "$OUT" -w '%{http_code}' "$@")
    if [ "$status" != "$expected" ]; then
        echo "unexpected HTTP $status (expected $expected) for: $*" >&2
        cat "$OUT" >&2
        exit 1
    fi
}

call 200 -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials \
    --data-urlencode 'scope=system/*.cruds' "$BASE_URL/auth/token"
TOKEN=$(jq -r .access_token "$OUT")

call 200 -X POST "$BASE_URL/fhir" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/fhir+json' \
    --data-binary "@$HERE/careteam-bundle.json"
jq -r '.entry[].response | "\(.status)  \(.location)"' "$OUT"
PATIENT=$(jq -r '.entry[0].response.location | split("/_history")[0] | split("/fhir/")[1]' "$OUT")

call 200 -G "$BASE_URL/fhir/CareTeam" -H "Authorization: Bearer $TOKEN" \
    --data-urlencode "patient=$PATIENT" --data-urlencode 'status=active'
jq -e '[.entry[]?.resource.participant[].role[].coding[].code] | index("coordinateur-parcours")' "$OUT" >/dev/null || {
    echo "no coordinator in the care team of $PATIENT" >&2
    cat "$OUT" >&2
    exit 1
}
echo "$PATIENT: $(jq '[.entry[]?] | length' "$OUT") active care team(s)"
