#!/usr/bin/env python3
"""HL7 v2 ADT A01 (admission) then A03 (discharge) over MLLP (docs/integration.md section 2.3).

MLLP frames each message as 0x0B <message> 0x1C 0x0D and answers one ACK per message. Plain MLLP has no
credentials: the server listens on loopback and accepts only the senders (MSH-3^MSH-4) listed in
COORDINATION_MLLP_SENDERS, here ``SIH^CHU``. Segments are separated by carriage returns; the example
files use line feeds for readability and are converted here.

Environment: MLLP_HOST (127.0.0.1), MLLP_PORT (2575) (examples/README.md).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = b"\x0b", b"\x1c\x0d"


def send(connection: socket.socket, message: bytes) -> str:
    connection.sendall(START + message + END)
    answer = b""
    while not answer.endswith(END):
        chunk = connection.recv(65536)
        if not chunk:
            sys.exit("hl7v2_mllp: the connection closed before the ACK")
        answer += chunk
    return answer[len(START) : -len(END)].decode("utf-8")


def main() -> None:
    host, port = os.environ.get("MLLP_HOST", "127.0.0.1"), int(os.environ.get("MLLP_PORT", "2575"))
    with socket.create_connection((host, port), timeout=30) as connection:
        for name in ("adt-a01.hl7", "adt-a03.hl7"):
            lines = (HERE / name).read_text(encoding="utf-8").splitlines()
            message = "\r".join(line for line in lines if line) + "\r"
            ack = send(connection, message.encode("utf-8"))
            msa = next((s for s in ack.split("\r") if s.startswith("MSA|")), "")
            print(f"{name}: {msa}")
            if not msa.startswith("MSA|AA|"):
                sys.exit(f"hl7v2_mllp: {name} was not accepted:\n" + ack.replace("\r", "\n"))


if __name__ == "__main__":
    main()
