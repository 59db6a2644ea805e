#!/bin/sh
# Hospital push: a discharge as a FHIR message, FHIR $process-message (docs/integration.md section 2.1).
# Sends discharge-davinci.json (Da Vinci notification-discharge) and discharge-tre-r254.json (TRE_R254
# SOR), checks each answer is a response message with code "ok", then lists recent discharges with
# the follow-up Tasks the protocols created (Task.encounter: _revinclude=Task:encounter).
# The client must be registered with the sender of the messages (MessageHeader.source.endpoint):
#   coordination clients create ... --sender 'urn:oid:1.2.250.1.71.4.2.2|1330000001'
# A message sent again (same client, sender and MessageHeader.id) answers the same and writes nothing.
# Environment: BASE_URL, CLIENT_ID, CLIENT_SECRET (examples/README.md). Needs curl and jq.
set -eu
BASE_URL=${BASE_URL:-http://127.0.0.1:8080}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

# call EXPECTED_STATUS curl-arguments...: the body is left in $OUT; another status ends the script.
call() {
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

for message in discharge-davinci.json discharge-tre-r254.json; do
    call 200 -X POST "$BASE_URL/fhir/\$process-message" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/fhir+json' \
        --data-binary "@$HERE/$message"
    code=$(jq -r '.entry[0].resource.response.code' "$OUT")
    if [ "$code" != ok ]; then
        echo "$message: response code $code" >&2
        cat "$OUT" >&2
        exit 1
    fi
    echo "$message: $(jq -r '.entry[0].resource.response | "\(.identifier) \(.code)"' "$OUT")"
done

call 200 -G "$BASE_URL/fhir/Encounter" -H "Authorization: Bearer $TOKEN" \
    --data-urlencode 'status=finished' --data-urlencode 'date=ge2026-11-01' \
    --data-urlencode '_revinclude=Task:encounter'
echo "finished stays since 2026-11-01: $(jq '[.entry[]? | select(.search.mode == "match")] | length' "$OUT")," \
    "their follow-up Tasks: $(jq '[.entry[]? | select(.resource.resourceType == "Task")] | length' "$OUT")"
