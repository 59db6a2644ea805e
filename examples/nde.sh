#!/bin/sh
# NdE (ANS notification d'événement): a discharge announced as a CommunicationRequest
# (docs/integration.md section 2.4). nde-communication-request.json carries the event type in the
# extension https://interop.esante.gouv.fr/ig/fhir/nde/StructureDefinition/event-type (TRE_R254 SOR or
# ADM), the patient (with the FR Core identity-reliability extension) and the sending Organization as
# contained resources, and an identifier: the first POST answers 201, a resend 200 with the same
# resource (nothing new is written). The client must be registered with the sender's FINESS:
#   coordination clients create ... --sender 750100125
# Environment: BASE_URL, CLIENT_ID, CLIENT_SECRET (examples/README.md). Needs curl and jq.
set -eu
BASE_URL=${BASE_URL:-http://127.0.0.1:8080}
HERE=$(cd "$(dirname "$0")" && pwd)
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

call '201|200' -X POST "$BASE_URL/fhir/CommunicationRequest" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/fhir+json' \
    --data-binary "@$HERE/nde-communication-request.json"
ID=$(jq -r .id "$OUT")
echo "CommunicationRequest/$ID: subject $(jq -r .subject.reference "$OUT"), encounter $(jq -r .encounter.reference "$OUT")"

# A resend is recognised by its identifier: same resource, 200.
call 200 -X POST "$BASE_URL/fhir/CommunicationRequest" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/fhir+json' \
    --data-binary "@$HERE/nde-communication-request.json"
[ "$(jq -r .id "$OUT")" = "$ID" ] || { echo "the resend made another resource" >&2; exit 1; }

call 200 -G "$BASE_URL/fhir/CommunicationRequest" -H "Authorization: Bearer $TOKEN" \
    --data-urlencode 'event-type=https://mos.esante.gouv.fr/NOS/TRE_R254-TypeEvenement/FHIR/TRE-R254-TypeEvenement|SOR'
echo "NdE discharges stored: $(jq '[.entry[]?] | length' "$OUT")"
