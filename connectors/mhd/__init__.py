"""DMP through a PDSm: IHE MHD ITI-65 "Provide Document Bundle" to a document recipient.

ITI-65 (IHE MHD 4.2, ITI TF-2 3.65): a FHIR ``transaction`` Bundle holding a SubmissionSet ``List``,
the ``DocumentReference`` and the ``Binary`` it points at (urn:uuid fullUrls), POSTed to the
recipient's base; the answer is a ``transaction-response`` (every entry 2xx) or an OperationOutcome.
The POST is sent once per call: the connector-jobs outbox retries it.
"""

from connectors.mhd.client import DocumentRecipient, MhdRecipient, NullRecipient
from connectors.mhd.errors import NOT_CONFIGURED, SERVICE, refusal
from connectors.mhd.mapping import (
    DOCUMENT_PROFILE,
    LIST_TYPES,
    MHD,
    SOURCE_ID,
    SUBMISSION_SET_PROFILE,
    ProvideResult,
    parse_response,
    provide_bundle,
)

__all__ = [
    "DOCUMENT_PROFILE",
    "LIST_TYPES",
    "MHD",
    "NOT_CONFIGURED",
    "SERVICE",
    "SOURCE_ID",
    "SUBMISSION_SET_PROFILE",
    "DocumentRecipient",
    "MhdRecipient",
    "NullRecipient",
    "ProvideResult",
    "parse_response",
    "provide_bundle",
    "refusal",
]
