#!/bin/sh
# Protocols: PlanDefinition/{id}/$apply for a patient (docs/integration.md section 3). $apply answers
# a draft CarePlan (nothing stored) whose instantiatesCanonical names the PlanDefinition's url;
# $start (POST) would store it and create its Tasks. The shipped protocol library is loaded by
# `coordination db upgrade`; a PlanDefinition is found by its canonical url. The patient comes from
# patient.json, created unless a Patient has its identifier (If-None-Exist).
# Environment: BASE_URL, CLIENT_ID, CLIENT_SECRET (examples/README.md). Needs curl and jq.
set -eu
BASE_URL=${BASE_URL:-http://127.0.0.1:8080}
HERE=$(cd "$(dirname "$0")" && pwd)
PROTOCOL=https://coordination.cpts.fr/fhir/PlanDefinition/retour-domicile-personne-agee
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

call() {  # call EXPECTED_STATUSES curl-arguments...  (statuses separated by |)
    expected=$1
    shift
    status=$(curl -sS -o "$OUT" -w '%{http_code}' "$@")
    case "|$expected|" in
    *"|$status|"*) ;;
    *)
        echo "unexpected HTTP $status (expected $expected) for: $*" >&2
        cat "$OUT" >&2
        exit 1
        ;;
    esac
}

call 200 -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials \
    --data-urlencode 'scope=system/*.cruds' "$BASE_URL/auth/token"
TOKEN=$(jq -r .access_token "$OUT")

call '201|200' -X POST "$BASE_URL/fhir/Patient" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/fhir+json' \
    -H 'If-None-Exist: identifier=urn:oid:1.2.250.1.71.4.2.2.1|IPP-0004' \
    --data-binary "@$HERE/patient.json"
PATIENT=Patient/$(jq -r .id "$OUT")

call 200 -G "$BASE_URL/fhir/PlanDefinition" -H "Authorization: Bearer $TOKEN" --data-urlencode "url=$PROTOCOL"
DEFINITION=$(jq -r '.entry[0].resource.id' "$OUT")

call 200 -G "$BASE_URL/fhir/PlanDefinition/$DEFINITION/\$apply" -H "Authorization: Bearer $TOKEN" \
    --data-urlencode "subject=$PATIENT"
jq -e --arg url "$PROTOCOL" --arg subject "$PATIENT" \
    '.resourceType == "CarePlan" and .subject.reference == $subject and (.instantiatesCanonical | index($url))' \
    "$OUT" >/dev/null || { echo "unexpected \$apply answer" >&2; cat "$OUT" >&2; exit 1; }
echo "\$apply: CarePlan ($(jq -r .status "$OUT")) for $PATIENT, $(jq '[.activity[]?] | length' "$OUT") activities"
