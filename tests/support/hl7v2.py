"""HL7 v2.5 ADT messages (IHE PAM France) built segment by segment, for the intake tests."""

from __future__ import annotations

INS_OK = "284057505612387"  # FR Core INS-NIR-TEST example (key 87)

INS_BAD_KEY = "284057505612388"

NIR_OK = "180057505612342"  # sex 1, key 97 - (1800575056123 mod 97) = 42

IPP = "IPP123456^^^CHU-NANTES&1.2.250.1.999.1.1&ISO^PI"

INS_NIR_TEST_CX = "{}^^^ASIP-SANTE-INS-NIR-TEST&1.2.250.1.213.1.4.10&ISO^INS"

INS_NIR_CX = "{}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"

NDA = "NDA2024001^^^CHU-NANTES&1.2.250.1.999.1.2&ISO^AN"


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment from {sequence: value}; for MSH, sequences start at 3 (MSH-1/2 are the delimiters)."""
    first = 3 if name == "MSH" else 1
    last = max(fields) if fields else first - 1
    values = [fields.get(i, "") for i in range(first, last + 1)]
    head = "MSH|^~\\&" if name == "MSH" else name
    return "|".join([head, *values])


def adt(
    trigger: str = "A01",
    *,
    charset: str | None = "UNICODE UTF-8",
    control_id: str = "MSG00001",
    message_type: str = "ADT",
    pid: dict[int, str] | None = None,
    pv1: dict[int, str] | None = None,
    encoding: str = "utf-8",
    newline: str = "\r",
) -> bytes:
    msh = {
        3: "SIH-PASTEL",
        4: "CHU-NANTES^440000289^M",
        5: "CPTS-CONNECT",
        6: "CPTS44",
        7: "20240315103000",
        9: f"{message_type}^{trigger}^ADT_{trigger}",
        10: control_id,
        11: "P",
        12: "2.5",
        17: "FRA",
    }
    if charset:
        msh[18] = charset
    pid_fields = {
        1: "1",
        3: f"{IPP}~{INS_NIR_TEST_CX.format(INS_OK)}",
        5: "LÉGER^Hélène^Hélène Marie^^Mme^^L~DUBOIS-LÉGER^Hélène^^^^^D",
        7: "19840524",
        8: "F",
        11: "12 rue de l'Église^Bât. B^Nantes^^44000^FRA^H",
        13: "^PRN^PH^^^^^^^^^0240000000~^NET^Internet^helene@example.fr",
        18: NDA,
        32: "VALI",
    }
    pid_fields.update(pid or {})
    pv1_fields = {
        1: "1",
        2: "I",
        3: "CARDIO^201^1^CHU-NANTES&440000289&M",
        7: "10003456789^MARTIN^Paul^^^Dr^^^ASIP-SANTE-PS&1.2.250.1.71.1.2.1&ISO^L^^^RPPS",
        8: "810101010101^BERNARD^Anne^^^Dr",
        19: NDA,
        44: "20240315100000",
    }
    pv1_fields.update(pv1 or {})
    segments = [
        seg("MSH", msh),
        seg("EVN", {2: "20240315102500", 6: "20240315100000"}),
        seg("PID", {k: v for k, v in pid_fields.items() if v is not None}),
        seg("PV1", pv1_fields),
    ]
    return (newline.join(segments) + newline).encode(encoding)
