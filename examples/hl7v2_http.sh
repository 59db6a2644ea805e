#!/bin/sh
# HL7 v2 ADT over HTTP (IHE PAM FR): adt-a01.hl7 (admission) then adt-a03.hl7 (discharge) posted to
# /hl7v2 (docs/integration.md section 2.2). The ACK is the body: 200 with MSA|AA when accepted.
# Segments are separated by carriage returns; the files use line feeds for readability (tr below).
# The client must be registered with the sender MSH-3^MSH-4 (first components):
#   coordination clients create ... --sender 'SIH^CHU'
# Environment: BASE_URL, CLIENT_ID, CLIENT_SECRET (examples/README.md). Needs curl and jq.
set -eu
BASE_URL=${BASE_URL:-http://127.0.0.1:8080}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

status=$(curl -sS -o "$OUT" -w '%{http_code}' -u "$CLIENT_ID:$CLIENT_SECRET" \
    -d grant_type=client_credentials --data-urlencode 'scope=system/*.cruds' "$BASE_URL/auth/token")
[ "$status" = 200 ] || { echo "token: HTTP $status" >&2; cat "$OUT" >&2; exit 1; }
TOKEN=$(jq -r .access_token "$OUT")

for message in adt-a01.hl7 adt-a03.hl7; do
    status=$(tr '\n' '\r' <"$HERE/$message" | curl -sS -o "$OUT" -w '%{http_code}' -X POST "$BASE_URL/hl7v2" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: x-application/hl7-v2+er7' --data-binary @-)
    msa=$(tr '\r' '\n' <"$OUT" | grep '^MSA|' || true)
    echo "$message: HTTP $status $msa"
    case "$status $msa" in
    "200 MSA|AA|"*) ;;
    *) tr '\r' '\n' <"$OUT" >&2; exit 1 ;;
    esac
done
