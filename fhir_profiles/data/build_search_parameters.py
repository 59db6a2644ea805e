"""Generate ``search-parameters.json``: FHIR R4 (4.0.1) SearchParameter definitions.

The table below is a hand-written transcription of the search parameters that the
FHIR R4 specification lists for the resource types this server supports.  Composite
parameters and the ``_text``/``_content``/``_list``/``_query``/``_filter`` specials are
left out.  Parameters that R4 shares between several resource types (``clinical-*``,
``individual-*``, ``medications-*``, ``conformance-*``) keep R4's id, base list and union
expression.

Regenerate the data file with::

    python fhir_profiles/data/build_search_parameters.py

``--check`` only compares the freshly generated content with the file on disk.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

FHIR_VERSION = "4.0.1"
URL_PREFIX = "http://hl7.org/fhir/SearchParameter/"
OUTPUT = Path(__file__).with_name("search-parameters.json")

COMPARATORS = ["eq", "ne", "gt", "ge", "lt", "le", "sa", "eb", "ap"]
MODIFIERS: dict[str, list[str]] = {
    "string": ["missing", "exact", "contains"],
    "token": ["missing", "text", "not", "in", "not-in", "below", "above", "of-type"],
    "reference": ["missing", "type", "identifier"],
    "uri": ["missing", "below", "above"],
    "date": ["missing"],
    "number": ["missing"],
    "quantity": ["missing"],
    "special": ["missing"],
}
TYPES_WITH_COMPARATORS = {"date", "number", "quantity"}


def _words(text: str) -> list[str]:
    """Split a whitespace-separated list of names."""
    return text.split()


# Every R4 resource type; a target written as "Any" expands to this list.
ALL_RESOURCE_TYPES = _words(
    """
Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse AuditEvent
Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement CarePlan CareTeam
CatalogEntry ChargeItem ChargeItemDefinition Claim ClaimResponse ClinicalImpression CodeSystem
Communication CommunicationRequest CompartmentDefinition Composition ConceptMap Condition Consent
Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue Device
DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement DiagnosticReport DocumentManifest
DocumentReference EffectEvidenceSynthesis Encounter Endpoint EnrollmentRequest EnrollmentResponse
EpisodeOfCare EventDefinition Evidence EvidenceVariable ExampleScenario ExplanationOfBenefit
FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy
Immunization ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide InsurancePlan
Invoice Library Linkage List Location Measure MeasureReport Media Medication MedicationAdministration
MedicationDispense MedicationKnowledge MedicationRequest MedicationStatement MedicinalProduct
MedicinalProductAuthorization MedicinalProductContraindication MedicinalProductIndication
MedicinalProductIngredient MedicinalProductInteraction MedicinalProductManufactured
MedicinalProductPackaged MedicinalProductPharmaceutical MedicinalProductUndesirableEffect
MessageDefinition MessageHeader MolecularSequence NamingSystem NutritionOrder Observation
ObservationDefinition OperationDefinition OperationOutcome Organization OrganizationAffiliation
Patient PaymentNotice PaymentReconciliation Person PlanDefinition Practitioner
PractitionerRole Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson RequestGroup
ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment
RiskEvidenceSynthesis Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition
StructureDefinition StructureMap Subscription Substance SubstanceNucleicAcid SubstancePolymer
SubstanceProtein SubstanceReferenceInformation SubstanceSourceMaterial SubstanceSpecification
SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport TestScript ValueSet
VerificationResult VisionPrescription
"""
)

# (code, type, FHIRPath expression, targets separated by spaces, description)
Row = tuple[str, str, str, str, str]
# (id, code, type, expression parts joined by " | ", targets, description)
Shared = tuple[str, str, str, list[str], str, str]

PRACTITIONERS = "Practitioner PractitionerRole"
AGENTS = "Device Organization Patient Practitioner PractitionerRole RelatedPerson"
SUBJECT_GP = "Group Patient"


def _each(template: str, types: str) -> list[str]:
    """Expand ``template`` (with ``{}`` standing for a type name) over a list of types."""
    return [template.format(t) for t in types.split()]


def _each2(template: str, second: str, types: str) -> list[str]:
    """Like :func:`_each`, but emit two parts per type (the second template after the first)."""
    parts: list[str] = []
    for t in types.split():
        parts += [template.format(t), second.format(t)]
    return parts


# ---------------------------------------------------------------------------------------------
# Parameters shared between resource types
# ---------------------------------------------------------------------------------------------

COMMON: list[Shared] = [
    ("Resource-id", "_id", "token", ["Resource.id"], "", "Logical id of the resource"),
    (
        "Resource-lastUpdated",
        "_lastUpdated",
        "date",
        ["Resource.meta.lastUpdated"],
        "",
        "When the resource version last changed",
    ),
    ("Resource-tag", "_tag", "token", ["Resource.meta.tag"], "", "Tags applied to the resource"),
    (
        "Resource-profile",
        "_profile",
        "uri",
        ["Resource.meta.profile"],
        "",
        "Profiles the resource claims to conform to",
    ),
    (
        "Resource-security",
        "_security",
        "token",
        ["Resource.meta.security"],
        "",
        "Security labels applied to the resource",
    ),
    ("Resource-source", "_source", "uri", ["Resource.meta.source"], "", "Where the resource came from"),
]

INDIVIDUALS = "Patient Person Practitioner RelatedPerson"
TELECOM_OWNERS = "Patient Person Practitioner PractitionerRole RelatedPerson"

INDIVIDUAL: list[Shared] = [
    (
        "individual-address",
        "address",
        "string",
        _each("{}.address", INDIVIDUALS),
        "",
        "Any part of an address (street, city, district, state, country, postal code, text)",
    ),
    (
        "individual-address-city",
        "address-city",
        "string",
        _each("{}.address.city", INDIVIDUALS),
        "",
        "City given in an address",
    ),
    (
        "individual-address-country",
        "address-country",
        "string",
        _each("{}.address.country", INDIVIDUALS),
        "",
        "Country given in an address",
    ),
    (
        "individual-address-postalcode",
        "address-postalcode",
        "string",
        _each("{}.address.postalCode", INDIVIDUALS),
        "",
        "Postal code given in an address",
    ),
    (
        "individual-address-state",
        "address-state",
        "string",
        _each("{}.address.state", INDIVIDUALS),
        "",
        "State or province given in an address",
    ),
    (
        "individual-address-use",
        "address-use",
        "token",
        _each("{}.address.use", INDIVIDUALS),
        "",
        "Purpose of an address (home, work, ...)",
    ),
    (
        "individual-birthdate",
        "birthdate",
        "date",
        _each("{}.birthDate", "Patient Person RelatedPerson"),
        "",
        "Date of birth",
    ),
    (
        "individual-email",
        "email",
        "token",
        _each("{}.telecom.where(system='email')", TELECOM_OWNERS),
        "",
        "An email contact point",
    ),
    (
        "individual-family",
        "family",
        "string",
        _each("{}.name.family", "Patient Practitioner"),
        "",
        "Family name (surname)",
    ),
    (
        "individual-gender",
        "gender",
        "token",
        _each("{}.gender", INDIVIDUALS),
        "",
        "Administrative gender",
    ),
    (
        "individual-given",
        "given",
        "string",
        _each("{}.name.given", "Patient Practitioner"),
        "",
        "Given name(s)",
    ),
    (
        "individual-phone",
        "phone",
        "token",
        _each("{}.telecom.where(system='phone')", TELECOM_OWNERS),
        "",
        "A phone contact point",
    ),
    (
        "individual-phonetic",
        "phonetic",
        "string",
        _each("{}.name", INDIVIDUALS),
        "",
        "Name matched with a phonetic algorithm chosen by the server",
    ),
    (
        "individual-telecom",
        "telecom",
        "token",
        _each("{}.telecom", TELECOM_OWNERS),
        "",
        "Any kind of contact point (phone, email, ...)",
    ),
]

CLINICAL: list[Shared] = [
    (
        "clinical-code",
        "code",
        "token",
        [
            "AllergyIntolerance.code",
            "AllergyIntolerance.reaction.substance",
            "Condition.code",
            "(DeviceRequest.code as CodeableConcept)",
            "DiagnosticReport.code",
            "FamilyMemberHistory.condition.code",
            "List.code",
            "Medication.code",
            "(MedicationAdministration.medication as CodeableConcept)",
            "(MedicationDispense.medication as CodeableConcept)",
            "(MedicationRequest.medication as CodeableConcept)",
            "(MedicationStatement.medication as CodeableConcept)",
            "Observation.code",
            "Procedure.code",
            "ServiceRequest.code",
        ],
        "",
        "The main code describing what the resource is about",
    ),
    (
        "clinical-date",
        "date",
        "date",
        [
            "AllergyIntolerance.recordedDate",
            "CarePlan.period",
            "CareTeam.period",
            "ClinicalImpression.date",
            "Composition.date",
            "Consent.dateTime",
            "DiagnosticReport.effective",
            "Encounter.period",
            "EpisodeOfCare.period",
            "FamilyMemberHistory.date",
            "Flag.period",
            "Immunization.occurrence",
            "List.date",
            "Observation.effective",
            "Procedure.performed",
            "(RiskAssessment.occurrence as dateTime)",
            "SupplyRequest.authoredOn",
        ],
        "",
        "The main clinically relevant date or period of the resource",
    ),
    (
        "clinical-encounter",
        "encounter",
        "reference",
        [
            "Composition.encounter",
            "DeviceRequest.encounter",
            "DiagnosticReport.encounter",
            "DocumentReference.context.encounter",
            "Flag.encounter",
            "List.encounter",
            "NutritionOrder.encounter",
            "Observation.encounter",
            "Procedure.encounter",
            "RiskAssessment.encounter",
            "ServiceRequest.encounter",
            "VisionPrescription.encounter",
        ],
        "Encounter EpisodeOfCare",
        "The encounter in which the resource was created or which it relates to",
    ),
    (
        "clinical-identifier",
        "identifier",
        "token",
        [
            "AllergyIntolerance.identifier",
            "CarePlan.identifier",
            "CareTeam.identifier",
            "Composition.identifier",
            "Condition.identifier",
            "Consent.identifier",
            "DetectedIssue.identifier",
            "DeviceRequest.identifier",
            "DiagnosticReport.identifier",
            "DocumentManifest.masterIdentifier",
            "DocumentManifest.identifier",
            "DocumentReference.masterIdentifier",
            "DocumentReference.identifier",
            "Encounter.identifier",
            "EpisodeOfCare.identifier",
            "FamilyMemberHistory.identifier",
            "Goal.identifier",
            "ImagingStudy.identifier",
            "Immunization.identifier",
            "List.identifier",
            "MedicationAdministration.identifier",
            "MedicationDispense.identifier",
            "MedicationRequest.identifier",
            "MedicationStatement.identifier",
            "NutritionOrder.identifier",
            "Observation.identifier",
            "Procedure.identifier",
            "RiskAssessment.identifier",
            "ServiceRequest.identifier",
            "SupplyDelivery.identifier",
            "SupplyRequest.identifier",
            "VisionPrescription.identifier",
        ],
        "",
        "A business identifier of the resource",
    ),
    (
        "clinical-patient",
        "patient",
        "reference",
        [
            "AllergyIntolerance.patient",
            "CarePlan.subject.where(resolve() is Patient)",
            "CareTeam.subject.where(resolve() is Patient)",
            "ClinicalImpression.subject.where(resolve() is Patient)",
            "Composition.subject.where(resolve() is Patient)",
            "Condition.subject.where(resolve() is Patient)",
            "Consent.patient",
            "DetectedIssue.patient",
            "DeviceRequest.subject.where(resolve() is Patient)",
            "DeviceUseStatement.subject",
            "DiagnosticReport.subject.where(resolve() is Patient)",
            "DocumentManifest.subject.where(resolve() is Patient)",
            "DocumentReference.subject.where(resolve() is Patient)",
            "Encounter.subject.where(resolve() is Patient)",
            "EpisodeOfCare.patient",
            "FamilyMemberHistory.patient",
            "Flag.subject.where(resolve() is Patient)",
            "Goal.subject.where(resolve() is Patient)",
            "ImagingStudy.subject.where(resolve() is Patient)",
            "Immunization.patient",
            "List.subject.where(resolve() is Patient)",
            "MedicationAdministration.subject.where(resolve() is Patient)",
            "MedicationDispense.subject.where(resolve() is Patient)",
            "MedicationRequest.subject.where(resolve() is Patient)",
            "MedicationStatement.subject.where(resolve() is Patient)",
            "NutritionOrder.patient",
            "Observation.subject.where(resolve() is Patient)",
            "Procedure.subject.where(resolve() is Patient)",
            "RiskAssessment.subject.where(resolve() is Patient)",
            "ServiceRequest.subject.where(resolve() is Patient)",
            "SupplyDelivery.patient",
            "VisionPrescription.patient",
        ],
        "Group Patient",
        "The patient the resource is about",
    ),
    (
        "clinical-type",
        "type",
        "token",
        _each(
            "{}.type",
            "AllergyIntolerance Composition DocumentManifest DocumentReference Encounter EpisodeOfCare",
        ),
        "",
        "The type or kind of the resource",
    ),
]

MEDICATION_EVENTS = "MedicationAdministration MedicationDispense MedicationRequest MedicationStatement"

MEDICATIONS: list[Shared] = [
    (
        "medications-medication",
        "medication",
        "reference",
        _each("({}.medication as Reference)", MEDICATION_EVENTS),
        "Medication",
        "The medication, when given as a reference to a Medication resource",
    ),
    (
        "medications-status",
        "status",
        "token",
        _each("{}.status", MEDICATION_EVENTS),
        "",
        "Status of the medication event or order",
    ),
    (
        "medications-date",
        "date",
        "date",
        ["MedicationRequest.dosageInstruction.timing.event"],
        "",
        "A date on which the medication is to be given",
    ),
    (
        "medications-encounter",
        "encounter",
        "reference",
        ["MedicationRequest.encounter"],
        "Encounter",
        "Encounter in which the prescription was written",
    ),
]

CONFORMANCE_ALL = (
    "CapabilityStatement CodeSystem CompartmentDefinition ConceptMap GraphDefinition ImplementationGuide"
    " MessageDefinition NamingSystem OperationDefinition SearchParameter StructureDefinition StructureMap"
    " TerminologyCapabilities ValueSet"
)
CONFORMANCE_JURISDICTION = CONFORMANCE_ALL.replace(" CompartmentDefinition", "")
CONFORMANCE_URL = CONFORMANCE_ALL.replace(" NamingSystem", "")
CONFORMANCE_TITLE = (
    "CapabilityStatement CodeSystem ConceptMap ImplementationGuide MessageDefinition OperationDefinition"
    " StructureDefinition StructureMap TerminologyCapabilities ValueSet"
)
CONFORMANCE_IDENTIFIER = "CodeSystem ConceptMap MessageDefinition StructureDefinition StructureMap ValueSet"

CONFORMANCE: list[Shared] = [
    (
        "conformance-context",
        "context",
        "token",
        _each("({}.useContext.value as CodeableConcept)", CONFORMANCE_ALL),
        "",
        "A coded use context value of the artifact",
    ),
    (
        "conformance-context-quantity",
        "context-quantity",
        "quantity",
        _each2("({}.useContext.value as Quantity)", "({}.useContext.value as Range)", CONFORMANCE_ALL),
        "",
        "A quantity or range use context value of the artifact",
    ),
    (
        "conformance-context-type",
        "context-type",
        "token",
        _each("{}.useContext.code", CONFORMANCE_ALL),
        "",
        "The kind of use context given for the artifact",
    ),
    (
        "conformance-date",
        "date",
        "date",
        _each("{}.date", CONFORMANCE_ALL),
        "",
        "Publication date of the artifact",
    ),
    (
        "conformance-description",
        "description",
        "string",
        _each("{}.description", CONFORMANCE_ALL),
        "",
        "Text in the artifact's description",
    ),
    (
        "conformance-identifier",
        "identifier",
        "token",
        _each("{}.identifier", CONFORMANCE_IDENTIFIER),
        "",
        "An external identifier of the artifact",
    ),
    (
        "conformance-jurisdiction",
        "jurisdiction",
        "token",
        _each("{}.jurisdiction", CONFORMANCE_JURISDICTION),
        "",
        "Jurisdiction the artifact is intended for",
    ),
    (
        "conformance-name",
        "name",
        "string",
        _each("{}.name", CONFORMANCE_ALL),
        "",
        "Computer-friendly name of the artifact",
    ),
    (
        "conformance-publisher",
        "publisher",
        "string",
        _each("{}.publisher", CONFORMANCE_ALL),
        "",
        "Name of the artifact's publisher",
    ),
    (
        "conformance-status",
        "status",
        "token",
        _each("{}.status", CONFORMANCE_ALL),
        "",
        "Publication status of the artifact",
    ),
    (
        "conformance-title",
        "title",
        "string",
        _each("{}.title", CONFORMANCE_TITLE),
        "",
        "Human-friendly title of the artifact",
    ),
    (
        "conformance-url",
        "url",
        "uri",
        _each("{}.url", CONFORMANCE_URL),
        "",
        "Canonical URL of the artifact",
    ),
    (
        "conformance-version",
        "version",
        "token",
        _each("{}.version", CONFORMANCE_URL),
        "",
        "Business version of the artifact",
    ),
]

SHARED: list[Shared] = COMMON + INDIVIDUAL + CLINICAL + MEDICATIONS + CONFORMANCE


# ---------------------------------------------------------------------------------------------
# Parameters defined for a single resource type (id "<Type>-<code>")
# ---------------------------------------------------------------------------------------------


def _definition_params(rt: str, related: bool) -> list[Row]:
    """Metadata parameters of knowledge artifacts (PlanDefinition, Questionnaire, ...)."""
    rows: list[Row] = [
        ("context", "token", f"({rt}.useContext.value as CodeableConcept)", "", "A coded use context value"),
        (
            "context-quantity",
            "quantity",
            f"({rt}.useContext.value as Quantity) | ({rt}.useContext.value as Range)",
            "",
            "A quantity or range use context value",
        ),
        ("context-type", "token", f"{rt}.useContext.code", "", "The kind of use context given"),
        ("date", "date", f"{rt}.date", "", "Publication date"),
        ("description", "string", f"{rt}.description", "", "Text in the description"),
        ("effective", "date", f"{rt}.effectivePeriod", "", "Period during which the content is in use"),
        ("identifier", "token", f"{rt}.identifier", "", "An external identifier"),
        ("jurisdiction", "token", f"{rt}.jurisdiction", "", "Intended jurisdiction"),
        ("name", "string", f"{rt}.name", "", "Computer-friendly name"),
        ("publisher", "string", f"{rt}.publisher", "", "Name of the publisher"),
        ("status", "token", f"{rt}.status", "", "Publication status"),
        ("title", "string", f"{rt}.title", "", "Human-friendly title"),
        ("url", "uri", f"{rt}.url", "", "Canonical URL"),
        ("version", "token", f"{rt}.version", "", "Business version"),
    ]
    if related:
        ra = f"{rt}.relatedArtifact"
        rows += [
            (
                "composed-of",
                "reference",
                f"{ra}.where(type='composed-of').resource",
                "Any",
                "An artifact this one is composed of",
            ),
            (
                "depends-on",
                "reference",
                f"{ra}.where(type='depends-on').resource | {rt}.library",
                "Any",
                "An artifact (such as a Library) this one depends on",
            ),
            (
                "derived-from",
                "reference",
                f"{ra}.where(type='derived-from').resource",
                "Any",
                "An artifact this one is derived from",
            ),
            (
                "predecessor",
                "reference",
                f"{ra}.where(type='predecessor').resource",
                "Any",
                "The preceding version of the artifact",
            ),
            (
                "successor",
                "reference",
                f"{ra}.where(type='successor').resource",
                "Any",
                "The succeeding version of the artifact",
            ),
            ("topic", "token", f"{rt}.topic", "", "Topic category of the artifact"),
        ]
    return rows


def _address_params(rt: str, what: str) -> list[Row]:
    """Address parameters of Organization and Location."""
    a = f"{rt}.address"
    return [
        ("address", "string", a, "", f"Any part of the {what}'s address"),
        ("address-city", "string", f"{a}.city", "", f"City in the {what}'s address"),
        ("address-country", "string", f"{a}.country", "", f"Country in the {what}'s address"),
        ("address-postalcode", "string", f"{a}.postalCode", "", f"Postal code in the {what}'s address"),
        ("address-state", "string", f"{a}.state", "", f"State or province in the {what}'s address"),
        ("address-use", "token", f"{a}.use", "", f"Purpose of the {what}'s address"),
    ]


RESOURCE_PARAMS: dict[str, list[Row]] = {
    "Patient": [
        ("active", "token", "Patient.active", "", "Whether the patient record is in active use"),
        ("death-date", "date", "(Patient.deceased as dateTime)", "", "Recorded date of death"),
        (
            "deceased",
            "token",
            "Patient.deceased.exists() and Patient.deceased != false",
            "",
            "Whether the patient is recorded as deceased",
        ),
        (
            "general-practitioner",
            "reference",
            "Patient.generalPractitioner",
            "Organization Practitioner PractitionerRole",
            "The patient's nominated primary care provider",
        ),
        ("identifier", "token", "Patient.identifier", "", "A business identifier of the patient"),
        ("language", "token", "Patient.communication.language", "", "A language the patient speaks"),
        (
            "link",
            "reference",
            "Patient.link.other",
            "Patient RelatedPerson",
            "Another patient or related person record linked to this one",
        ),
        ("name", "string", "Patient.name", "", "Any part of the patient's name"),
        (
            "organization",
            "reference",
            "Patient.managingOrganization",
            "Organization",
            "Organization that is the custodian of the patient record",
        ),
    ],
    "Practitioner": [
        ("active", "token", "Practitioner.active", "", "Whether the practitioner record is in active use"),
        ("communication", "token", "Practitioner.communication", "", "A language the practitioner speaks"),
        ("identifier", "token", "Practitioner.identifier", "", "A business identifier of the practitioner"),
        ("name", "string", "Practitioner.name", "", "Any part of the practitioner's name"),
    ],
    "PractitionerRole": [
        ("active", "token", "PractitionerRole.active", "", "Whether the role record is in active use"),
        ("date", "date", "PractitionerRole.period", "", "Period during which the role applies"),
        ("endpoint", "reference", "PractitionerRole.endpoint", "Endpoint", "Technical endpoint for the role"),
        ("identifier", "token", "PractitionerRole.identifier", "", "A business identifier of the role"),
        (
            "location",
            "reference",
            "PractitionerRole.location",
            "Location",
            "A location where the role is performed",
        ),
        (
            "organization",
            "reference",
            "PractitionerRole.organization",
            "Organization",
            "Organization in which the role is held",
        ),
        (
            "practitioner",
            "reference",
            "PractitionerRole.practitioner",
            "Practitioner",
            "Practitioner who holds the role",
        ),
        ("role", "token", "PractitionerRole.code", "", "The role the practitioner may perform"),
        (
            "service",
            "reference",
            "PractitionerRole.healthcareService",
            "HealthcareService",
            "A healthcare service provided in this role",
        ),
        (
            "specialty",
            "token",
            "PractitionerRole.specialty",
            "",
            "A specialty of the practitioner in the role",
        ),
    ],
    "Organization": [
        ("active", "token", "Organization.active", "", "Whether the organization record is in active use"),
        *_address_params("Organization", "organization"),
        (
            "endpoint",
            "reference",
            "Organization.endpoint",
            "Endpoint",
            "Technical endpoint of the organization",
        ),
        ("identifier", "token", "Organization.identifier", "", "A business identifier of the organization"),
        ("name", "string", "Organization.name | Organization.alias", "", "Name or alias of the organization"),
        (
            "partof",
            "reference",
            "Organization.partOf",
            "Organization",
            "The organization this one is part of",
        ),
        ("phonetic", "string", "Organization.name", "", "Organization name matched phonetically"),
        ("type", "token", "Organization.type", "", "Kind of organization"),
    ],
    "Location": [
        *_address_params("Location", "location"),
        ("endpoint", "reference", "Location.endpoint", "Endpoint", "Technical endpoint of the location"),
        ("identifier", "token", "Location.identifier", "", "A business identifier of the location"),
        ("name", "string", "Location.name | Location.alias", "", "Name or alias of the location"),
        ("near", "special", "Location.position", "", "Locations near given coordinates"),
        (
            "operational-status",
            "token",
            "Location.operationalStatus",
            "",
            "Operational status (typically beds or rooms)",
        ),
        (
            "organization",
            "reference",
            "Location.managingOrganization",
            "Organization",
            "Organization responsible for the location",
        ),
        ("partof", "reference", "Location.partOf", "Location", "The location this one is part of"),
        ("status", "token", "Location.status", "", "Status of the location"),
        ("type", "token", "Location.type", "", "Kind of location"),
    ],
    "HealthcareService": [
        ("active", "token", "HealthcareService.active", "", "Whether the service record is in active use"),
        (
            "characteristic",
            "token",
            "HealthcareService.characteristic",
            "",
            "A characteristic of the service",
        ),
        (
            "coverage-area",
            "reference",
            "HealthcareService.coverageArea",
            "Location",
            "Area the service is available to",
        ),
        (
            "endpoint",
            "reference",
            "HealthcareService.endpoint",
            "Endpoint",
            "Technical endpoint of the service",
        ),
        ("identifier", "token", "HealthcareService.identifier", "", "A business identifier of the service"),
        (
            "location",
            "reference",
            "HealthcareService.location",
            "Location",
            "A location where the service is offered",
        ),
        ("name", "string", "HealthcareService.name", "", "Name of the service"),
        (
            "organization",
            "reference",
            "HealthcareService.providedBy",
            "Organization",
            "Organization that provides the service",
        ),
        ("program", "token", "HealthcareService.program", "", "A program the service is part of"),
        ("service-category", "token", "HealthcareService.category", "", "Broad category of the service"),
        ("service-type", "token", "HealthcareService.type", "", "Specific type of the service"),
        ("specialty", "token", "HealthcareService.specialty", "", "A specialty handled by the service"),
    ],
    "Endpoint": [
        ("connection-type", "token", "Endpoint.connectionType", "", "Protocol or profile of the endpoint"),
        ("identifier", "token", "Endpoint.identifier", "", "A business identifier of the endpoint"),
        ("name", "string", "Endpoint.name", "", "Name of the endpoint"),
        (
            "organization",
            "reference",
            "Endpoint.managingOrganization",
            "Organization",
            "Organization that manages the endpoint",
        ),
        (
            "payload-type",
            "token",
            "Endpoint.payloadType",
            "",
            "Kind of content exchanged through the endpoint",
        ),
        ("status", "token", "Endpoint.status", "", "Status of the endpoint"),
    ],
    "Encounter": [
        ("account", "reference", "Encounter.account", "Account", "Account used for billing the encounter"),
        (
            "appointment",
            "reference",
            "Encounter.appointment",
            "Appointment",
            "Appointment that scheduled the encounter",
        ),
        (
            "based-on",
            "reference",
            "Encounter.basedOn",
            "ServiceRequest",
            "Request that this encounter fulfils",
        ),
        ("class", "token", "Encounter.class", "", "Classification of the encounter (inpatient, ...)"),
        (
            "diagnosis",
            "reference",
            "Encounter.diagnosis.condition",
            "Condition Procedure",
            "A diagnosis or procedure relevant to the encounter",
        ),
        (
            "episode-of-care",
            "reference",
            "Encounter.episodeOfCare",
            "EpisodeOfCare",
            "Episode of care the encounter belongs to",
        ),
        ("length", "quantity", "Encounter.length", "", "Duration of the encounter"),
        (
            "location",
            "reference",
            "Encounter.location.location",
            "Location",
            "A location where the encounter took place",
        ),
        (
            "location-period",
            "date",
            "Encounter.location.period",
            "",
            "Time the patient spent at a location of the encounter",
        ),
        ("part-of", "reference", "Encounter.partOf", "Encounter", "Larger encounter this one is part of"),
        (
            "participant",
            "reference",
            "Encounter.participant.individual",
            "Practitioner PractitionerRole RelatedPerson",
            "A person taking part in the encounter",
        ),
        ("participant-type", "token", "Encounter.participant.type", "", "Role of a participant"),
        (
            "practitioner",
            "reference",
            "Encounter.participant.individual.where(resolve() is Practitioner)",
            "Practitioner",
            "A practitioner taking part in the encounter",
        ),
        ("reason-code", "token", "Encounter.reasonCode", "", "Coded reason for the encounter"),
        (
            "reason-reference",
            "reference",
            "Encounter.reasonReference",
            "Condition ImmunizationRecommendation Observation Procedure",
            "Resource giving the reason for the encounter",
        ),
        (
            "service-provider",
            "reference",
            "Encounter.serviceProvider",
            "Organization",
            "Organization responsible for the encounter",
        ),
        (
            "special-arrangement",
            "token",
            "Encounter.hospitalization.specialArrangement",
            "",
            "A special arrangement requested for the stay",
        ),
        ("status", "token", "Encounter.status", "", "Status of the encounter"),
        (
            "subject",
            "reference",
            "Encounter.subject",
            SUBJECT_GP,
            "Patient or group present at the encounter",
        ),
    ],
    "EpisodeOfCare": [
        (
            "care-manager",
            "reference",
            "EpisodeOfCare.careManager.where(resolve() is Practitioner)",
            "Practitioner",
            "Practitioner coordinating the episode",
        ),
        (
            "condition",
            "reference",
            "EpisodeOfCare.diagnosis.condition",
            "Condition",
            "A condition the episode addresses",
        ),
        (
            "incoming-referral",
            "reference",
            "EpisodeOfCare.referralRequest",
            "ServiceRequest",
            "Referral that started the episode",
        ),
        (
            "organization",
            "reference",
            "EpisodeOfCare.managingOrganization",
            "Organization",
            "Organization managing the episode",
        ),
        ("status", "token", "EpisodeOfCare.status", "", "Status of the episode"),
    ],
    "Condition": [
        (
            "abatement-age",
            "quantity",
            "Condition.abatement.as(Age) | Condition.abatement.as(Range)",
            "",
            "Age at which the condition resolved",
        ),
        (
            "abatement-date",
            "date",
            "Condition.abatement.as(dateTime) | Condition.abatement.as(Period)",
            "",
            "Date or period when the condition resolved",
        ),
        (
            "abatement-string",
            "string",
            "Condition.abatement.as(string)",
            "",
            "Free-text description of the resolution",
        ),
        (
            "asserter",
            "reference",
            "Condition.asserter",
            "Patient Practitioner PractitionerRole RelatedPerson",
            "Who asserted the condition",
        ),
        ("body-site", "token", "Condition.bodySite", "", "Anatomical location of the condition"),
        ("category", "token", "Condition.category", "", "Category of the condition"),
        ("clinical-status", "token", "Condition.clinicalStatus", "", "Clinical status of the condition"),
        ("encounter", "reference", "Condition.encounter", "Encounter", "Encounter in which it was recorded"),
        ("evidence", "token", "Condition.evidence.code", "", "A manifestation or symptom supporting it"),
        (
            "evidence-detail",
            "reference",
            "Condition.evidence.detail",
            "Any",
            "A resource supporting the condition",
        ),
        (
            "onset-age",
            "quantity",
            "Condition.onset.as(Age) | Condition.onset.as(Range)",
            "",
            "Age at which the condition began",
        ),
        (
            "onset-date",
            "date",
            "Condition.onset.as(dateTime) | Condition.onset.as(Period)",
            "",
            "Date or period when the condition began",
        ),
        ("onset-info", "string", "Condition.onset.as(string)", "", "Free-text description of the onset"),
        ("recorded-date", "date", "Condition.recordedDate", "", "When the condition was first recorded"),
        ("severity", "token", "Condition.severity", "", "Severity of the condition"),
        ("stage", "token", "Condition.stage.summary", "", "Summary of the condition's stage"),
        ("subject", "reference", "Condition.subject", SUBJECT_GP, "Who has the condition"),
        (
            "verification-status",
            "token",
            "Condition.verificationStatus",
            "",
            "Verification status of the condition",
        ),
    ],
    "Observation": [
        (
            "based-on",
            "reference",
            "Observation.basedOn",
            "CarePlan DeviceRequest ImmunizationRecommendation MedicationRequest NutritionOrder"
            " ServiceRequest",
            "Plan or request the observation fulfils",
        ),
        ("category", "token", "Observation.category", "", "Category of the observation"),
        (
            "combo-code",
            "token",
            "Observation.code | Observation.component.code",
            "",
            "Code of the observation or of one of its components",
        ),
        (
            "combo-data-absent-reason",
            "token",
            "Observation.dataAbsentReason | Observation.component.dataAbsentReason",
            "",
            "Why an observation or component value is missing",
        ),
        (
            "combo-value-concept",
            "token",
            "(Observation.value as CodeableConcept) | (Observation.component.value as CodeableConcept)",
            "",
            "Coded value of the observation or of a component",
        ),
        (
            "combo-value-quantity",
            "quantity",
            "(Observation.value as Quantity) | (Observation.value as SampledData)"
            " | (Observation.component.value as Quantity) | (Observation.component.value as SampledData)",
            "",
            "Quantity value of the observation or of a component",
        ),
        ("component-code", "token", "Observation.component.code", "", "Code of a component"),
        (
            "component-data-absent-reason",
            "token",
            "Observation.component.dataAbsentReason",
            "",
            "Why a component value is missing",
        ),
        (
            "component-value-concept",
            "token",
            "(Observation.component.value as CodeableConcept)",
            "",
            "Coded value of a component",
        ),
        (
            "component-value-quantity",
            "quantity",
            "(Observation.component.value as Quantity) | (Observation.component.value as SampledData)",
            "",
            "Quantity value of a component",
        ),
        (
            "data-absent-reason",
            "token",
            "Observation.dataAbsentReason",
            "",
            "Why the observation value is missing",
        ),
        (
            "derived-from",
            "reference",
            "Observation.derivedFrom",
            "DocumentReference ImagingStudy Media MolecularSequence Observation QuestionnaireResponse",
            "Resource the observation value was derived from",
        ),
        (
            "device",
            "reference",
            "Observation.device",
            "Device DeviceMetric",
            "Device used to produce the observation",
        ),
        (
            "focus",
            "reference",
            "Observation.focus",
            "Any",
            "What the observation is about when not the subject",
        ),
        (
            "has-member",
            "reference",
            "Observation.hasMember",
            "MolecularSequence Observation QuestionnaireResponse",
            "A related resource that belongs to this observation group",
        ),
        ("method", "token", "Observation.method", "", "How the observation was made"),
        (
            "part-of",
            "reference",
            "Observation.partOf",
            "ImagingStudy Immunization MedicationAdministration MedicationDispense MedicationStatement"
            " Procedure",
            "Larger event this observation is part of",
        ),
        (
            "performer",
            "reference",
            "Observation.performer",
            "CareTeam Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who is responsible for the observation",
        ),
        ("specimen", "reference", "Observation.specimen", "Specimen", "Specimen used for the observation"),
        ("status", "token", "Observation.status", "", "Status of the observation"),
        (
            "subject",
            "reference",
            "Observation.subject",
            "Device Group Location Patient",
            "Who or what the observation is about",
        ),
        (
            "value-concept",
            "token",
            "(Observation.value as CodeableConcept)",
            "",
            "Coded value of the observation",
        ),
        (
            "value-date",
            "date",
            "(Observation.value as dateTime) | (Observation.value as Period)",
            "",
            "Date or period value of the observation",
        ),
        (
            "value-quantity",
            "quantity",
            "(Observation.value as Quantity) | (Observation.value as SampledData)",
            "",
            "Quantity value of the observation",
        ),
        (
            "value-string",
            "string",
            "(Observation.value as string) | (Observation.value as CodeableConcept).text",
            "",
            "Text value of the observation",
        ),
    ],
    "AllergyIntolerance": [
        (
            "asserter",
            "reference",
            "AllergyIntolerance.asserter",
            "Patient Practitioner PractitionerRole RelatedPerson",
            "Source of the information",
        ),
        ("category", "token", "AllergyIntolerance.category", "", "Category of the substance (food, ...)"),
        ("clinical-status", "token", "AllergyIntolerance.clinicalStatus", "", "Clinical status"),
        ("criticality", "token", "AllergyIntolerance.criticality", "", "Estimated potential harm"),
        ("last-date", "date", "AllergyIntolerance.lastOccurrence", "", "Date of the last known reaction"),
        (
            "manifestation",
            "token",
            "AllergyIntolerance.reaction.manifestation",
            "",
            "Clinical symptom or sign of a reaction",
        ),
        ("onset", "date", "AllergyIntolerance.reaction.onset", "", "When a reaction began"),
        (
            "recorder",
            "reference",
            "AllergyIntolerance.recorder",
            "Patient Practitioner PractitionerRole RelatedPerson",
            "Who recorded the allergy",
        ),
        ("route", "token", "AllergyIntolerance.reaction.exposureRoute", "", "Route of exposure"),
        ("severity", "token", "AllergyIntolerance.reaction.severity", "", "Severity of a reaction"),
        (
            "verification-status",
            "token",
            "AllergyIntolerance.verificationStatus",
            "",
            "Verification status",
        ),
    ],
    "MedicationRequest": [
        ("authoredon", "date", "MedicationRequest.authoredOn", "", "When the prescription was written"),
        ("category", "token", "MedicationRequest.category", "", "Kind of medication usage"),
        (
            "intended-dispenser",
            "reference",
            "MedicationRequest.dispenseRequest.performer",
            "Organization",
            "Organization expected to dispense",
        ),
        (
            "intended-performer",
            "reference",
            "MedicationRequest.performer",
            "CareTeam Device Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who is expected to administer the medication",
        ),
        (
            "intended-performertype",
            "token",
            "MedicationRequest.performerType",
            "",
            "Kind of performer expected to administer",
        ),
        ("intent", "token", "MedicationRequest.intent", "", "Intent of the request (order, plan, ...)"),
        ("priority", "token", "MedicationRequest.priority", "", "Urgency of the request"),
        ("requester", "reference", "MedicationRequest.requester", AGENTS, "Who asked for the medication"),
        ("subject", "reference", "MedicationRequest.subject", SUBJECT_GP, "Who the medication is for"),
    ],
    "MedicationStatement": [
        ("category", "token", "MedicationStatement.category", "", "Kind of medication usage"),
        (
            "context",
            "reference",
            "MedicationStatement.context",
            "Encounter EpisodeOfCare",
            "Encounter or episode the statement belongs to",
        ),
        ("effective", "date", "MedicationStatement.effective", "", "When the medication was taken"),
        (
            "part-of",
            "reference",
            "MedicationStatement.partOf",
            "MedicationAdministration MedicationDispense MedicationStatement Observation Procedure",
            "Larger event this statement is part of",
        ),
        (
            "source",
            "reference",
            "MedicationStatement.informationSource",
            "Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who provided the information",
        ),
        ("subject", "reference", "MedicationStatement.subject", SUBJECT_GP, "Who takes the medication"),
    ],
    "MedicationAdministration": [
        (
            "context",
            "reference",
            "MedicationAdministration.context",
            "Encounter EpisodeOfCare",
            "Encounter or episode of the administration",
        ),
        ("device", "reference", "MedicationAdministration.device", "Device", "Device used to administer"),
        ("effective-time", "date", "MedicationAdministration.effective", "", "When it was administered"),
        (
            "performer",
            "reference",
            "MedicationAdministration.performer.actor",
            "Device Patient Practitioner PractitionerRole RelatedPerson",
            "Who administered the medication",
        ),
        ("reason-given", "token", "MedicationAdministration.reasonCode", "", "Why the medication was given"),
        (
            "reason-not-given",
            "token",
            "MedicationAdministration.statusReason",
            "",
            "Why the medication was not given",
        ),
        (
            "request",
            "reference",
            "MedicationAdministration.request",
            "MedicationRequest",
            "Order this administration fulfils",
        ),
        (
            "subject",
            "reference",
            "MedicationAdministration.subject",
            SUBJECT_GP,
            "Who received the medication",
        ),
    ],
    "Medication": [
        ("expiration-date", "date", "Medication.batch.expirationDate", "", "Expiry date of the batch"),
        ("form", "token", "Medication.form", "", "Dose form (powder, tablets, ...)"),
        ("identifier", "token", "Medication.identifier", "", "A business identifier of the medication"),
        (
            "ingredient",
            "reference",
            "(Medication.ingredient.item as Reference)",
            "Medication Substance",
            "An ingredient given as a reference",
        ),
        (
            "ingredient-code",
            "token",
            "(Medication.ingredient.item as CodeableConcept)",
            "",
            "An ingredient given as a code",
        ),
        ("lot-number", "token", "Medication.batch.lotNumber", "", "Lot number of the batch"),
        (
            "manufacturer",
            "reference",
            "Medication.manufacturer",
            "Organization",
            "Manufacturer of the medication",
        ),
        ("status", "token", "Medication.status", "", "Status of the medication record"),
    ],
    "Procedure": [
        (
            "based-on",
            "reference",
            "Procedure.basedOn",
            "CarePlan ServiceRequest",
            "Request this procedure fulfils",
        ),
        ("category", "token", "Procedure.category", "", "Classification of the procedure"),
        (
            "instantiates-canonical",
            "reference",
            "Procedure.instantiatesCanonical",
            "ActivityDefinition Measure OperationDefinition PlanDefinition Questionnaire",
            "Protocol or definition followed",
        ),
        (
            "instantiates-uri",
            "uri",
            "Procedure.instantiatesUri",
            "",
            "External protocol or definition followed",
        ),
        ("location", "reference", "Procedure.location", "Location", "Where the procedure happened"),
        (
            "part-of",
            "reference",
            "Procedure.partOf",
            "MedicationAdministration Observation Procedure",
            "Larger event this procedure is part of",
        ),
        (
            "performer",
            "reference",
            "Procedure.performer.actor",
            AGENTS,
            "Who performed the procedure",
        ),
        ("reason-code", "token", "Procedure.reasonCode", "", "Coded reason for the procedure"),
        (
            "reason-reference",
            "reference",
            "Procedure.reasonReference",
            "Condition DiagnosticReport DocumentReference Observation Procedure",
            "Resource justifying the procedure",
        ),
        ("status", "token", "Procedure.status", "", "Status of the procedure"),
        ("subject", "reference", "Procedure.subject", SUBJECT_GP, "Who the procedure was performed on"),
    ],
    "CarePlan": [
        ("activity-code", "token", "CarePlan.activity.detail.code", "", "Code of a planned activity"),
        (
            "activity-date",
            "date",
            "CarePlan.activity.detail.scheduled",
            "",
            "When a planned activity is scheduled",
        ),
        (
            "activity-reference",
            "reference",
            "CarePlan.activity.reference",
            "Appointment CommunicationRequest DeviceRequest MedicationRequest NutritionOrder RequestGroup"
            " ServiceRequest Task VisionPrescription",
            "Request resource describing an activity",
        ),
        ("based-on", "reference", "CarePlan.basedOn", "CarePlan", "Care plan this one fulfils"),
        ("care-team", "reference", "CarePlan.careTeam", "CareTeam", "Care team taking part in the plan"),
        ("category", "token", "CarePlan.category", "", "Kind of plan"),
        ("condition", "reference", "CarePlan.addresses", "Condition", "A health issue the plan addresses"),
        ("encounter", "reference", "CarePlan.encounter", "Encounter", "Encounter in which the plan was made"),
        ("goal", "reference", "CarePlan.goal", "Goal", "A desired outcome of the plan"),
        (
            "instantiates-canonical",
            "reference",
            "CarePlan.instantiatesCanonical",
            "ActivityDefinition Measure OperationDefinition PlanDefinition Questionnaire",
            "Protocol or definition followed",
        ),
        (
            "instantiates-uri",
            "uri",
            "CarePlan.instantiatesUri",
            "",
            "External protocol or definition followed",
        ),
        ("intent", "token", "CarePlan.intent", "", "Intent of the plan (proposal, plan, order, option)"),
        ("part-of", "reference", "CarePlan.partOf", "CarePlan", "Larger plan this one is part of"),
        (
            "performer",
            "reference",
            "CarePlan.activity.detail.performer",
            "CareTeam Device HealthcareService Organization Patient Practitioner PractitionerRole"
            " RelatedPerson",
            "Who is to perform a planned activity",
        ),
        ("replaces", "reference", "CarePlan.replaces", "CarePlan", "Care plan this one replaces"),
        ("status", "token", "CarePlan.status", "", "Status of the plan"),
        ("subject", "reference", "CarePlan.subject", SUBJECT_GP, "Who the plan is for"),
    ],
    "CareTeam": [
        ("category", "token", "CareTeam.category", "", "Kind of team"),
        ("encounter", "reference", "CareTeam.encounter", "Encounter", "Encounter the team was created for"),
        (
            "participant",
            "reference",
            "CareTeam.participant.member",
            "CareTeam Organization Patient Practitioner PractitionerRole RelatedPerson",
            "A member of the team",
        ),
        ("status", "token", "CareTeam.status", "", "Status of the team"),
        ("subject", "reference", "CareTeam.subject", SUBJECT_GP, "Who the team cares for"),
    ],
    "Goal": [
        ("achievement-status", "token", "Goal.achievementStatus", "", "Progress towards the goal"),
        ("category", "token", "Goal.category", "", "Kind of goal"),
        ("lifecycle-status", "token", "Goal.lifecycleStatus", "", "Lifecycle status of the goal"),
        ("start-date", "date", "(Goal.start as date)", "", "When work on the goal starts"),
        ("subject", "reference", "Goal.subject", "Group Organization Patient", "Who the goal is for"),
        ("target-date", "date", "(Goal.target.due as date)", "", "When a target should be reached"),
    ],
    "Task": [
        ("authored-on", "date", "Task.authoredOn", "", "When the task was created"),
        ("based-on", "reference", "Task.basedOn", "Any", "Request the task fulfils"),
        ("business-status", "token", "Task.businessStatus", "", "Business-specific status"),
        ("code", "token", "Task.code", "", "Kind of task"),
        ("encounter", "reference", "Task.encounter", "Encounter", "Encounter the task relates to"),
        ("focus", "reference", "Task.focus", "Any", "Resource the task acts on"),
        ("group-identifier", "token", "Task.groupIdentifier", "", "Identifier of the requisition group"),
        ("identifier", "token", "Task.identifier", "", "A business identifier of the task"),
        ("intent", "token", "Task.intent", "", "Intent of the task"),
        ("modified", "date", "Task.lastModified", "", "When the task last changed"),
        (
            "owner",
            "reference",
            "Task.owner",
            "CareTeam Device HealthcareService Organization Patient Practitioner PractitionerRole"
            " RelatedPerson",
            "Who is responsible for the task",
        ),
        ("part-of", "reference", "Task.partOf", "Task", "Larger task this one is part of"),
        (
            "patient",
            "reference",
            "Task.for.where(resolve() is Patient)",
            "Patient",
            "Patient the task is for",
        ),
        ("performer", "token", "Task.performerType", "", "Kind of performer wanted"),
        ("period", "date", "Task.executionPeriod", "", "When the task is carried out"),
        ("priority", "token", "Task.priority", "", "Urgency of the task"),
        ("requester", "reference", "Task.requester", AGENTS, "Who asked for the task"),
        ("status", "token", "Task.status", "", "Status of the task"),
        ("subject", "reference", "Task.for", "Any", "Who or what benefits from the task"),
    ],
    "ServiceRequest": [
        ("authored", "date", "ServiceRequest.authoredOn", "", "When the request was made"),
        (
            "based-on",
            "reference",
            "ServiceRequest.basedOn",
            "CarePlan MedicationRequest ServiceRequest",
            "Plan or request this one fulfils",
        ),
        ("body-site", "token", "ServiceRequest.bodySite", "", "Body site for the service"),
        ("category", "token", "ServiceRequest.category", "", "Classification of the service"),
        (
            "instantiates-canonical",
            "reference",
            "ServiceRequest.instantiatesCanonical",
            "ActivityDefinition PlanDefinition",
            "Protocol or definition followed",
        ),
        (
            "instantiates-uri",
            "uri",
            "ServiceRequest.instantiatesUri",
            "",
            "External protocol or definition followed",
        ),
        ("intent", "token", "ServiceRequest.intent", "", "Intent of the request"),
        ("occurrence", "date", "ServiceRequest.occurrence", "", "When the service should happen"),
        (
            "performer",
            "reference",
            "ServiceRequest.performer",
            "CareTeam Device HealthcareService Organization Patient Practitioner PractitionerRole"
            " RelatedPerson",
            "Requested performer",
        ),
        ("performer-type", "token", "ServiceRequest.performerType", "", "Kind of performer requested"),
        ("priority", "token", "ServiceRequest.priority", "", "Urgency of the request"),
        ("replaces", "reference", "ServiceRequest.replaces", "ServiceRequest", "Request this one replaces"),
        ("requester", "reference", "ServiceRequest.requester", AGENTS, "Who made the request"),
        ("requisition", "token", "ServiceRequest.requisition", "", "Composite (group) request identifier"),
        ("specimen", "reference", "ServiceRequest.specimen", "Specimen", "Specimen to be used"),
        ("status", "token", "ServiceRequest.status", "", "Status of the request"),
        (
            "subject",
            "reference",
            "ServiceRequest.subject",
            "Device Group Location Patient",
            "Who or what the service is for",
        ),
    ],
    "CommunicationRequest": [
        ("authored", "date", "CommunicationRequest.authoredOn", "", "When the request was made"),
        ("based-on", "reference", "CommunicationRequest.basedOn", "Any", "Plan or request this one fulfils"),
        ("category", "token", "CommunicationRequest.category", "", "Kind of message"),
        (
            "encounter",
            "reference",
            "CommunicationRequest.encounter",
            "Encounter",
            "Encounter the request relates to",
        ),
        (
            "group-identifier",
            "token",
            "CommunicationRequest.groupIdentifier",
            "",
            "Composite (group) request identifier",
        ),
        (
            "identifier",
            "token",
            "CommunicationRequest.identifier",
            "",
            "A business identifier of the request",
        ),
        ("medium", "token", "CommunicationRequest.medium", "", "Channel of communication"),
        (
            "occurrence",
            "date",
            "(CommunicationRequest.occurrence as dateTime)",
            "",
            "When the communication should happen",
        ),
        (
            "patient",
            "reference",
            "CommunicationRequest.subject.where(resolve() is Patient)",
            "Patient",
            "Patient the communication is about",
        ),
        ("priority", "token", "CommunicationRequest.priority", "", "Urgency of the request"),
        (
            "recipient",
            "reference",
            "CommunicationRequest.recipient",
            "CareTeam Device Group HealthcareService Organization Patient Practitioner PractitionerRole"
            " RelatedPerson",
            "Who should receive the message",
        ),
        (
            "replaces",
            "reference",
            "CommunicationRequest.replaces",
            "CommunicationRequest",
            "Request this one replaces",
        ),
        ("requester", "reference", "CommunicationRequest.requester", AGENTS, "Who made the request"),
        (
            "sender",
            "reference",
            "CommunicationRequest.sender",
            "Device HealthcareService Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who should send the message",
        ),
        ("status", "token", "CommunicationRequest.status", "", "Status of the request"),
        ("subject", "reference", "CommunicationRequest.subject", SUBJECT_GP, "Focus of the message"),
    ],
    "Communication": [
        ("based-on", "reference", "Communication.basedOn", "Any", "Request this communication fulfils"),
        ("category", "token", "Communication.category", "", "Kind of message"),
        ("encounter", "reference", "Communication.encounter", "Encounter", "Encounter it relates to"),
        ("identifier", "token", "Communication.identifier", "", "A business identifier"),
        (
            "instantiates-canonical",
            "reference",
            "Communication.instantiatesCanonical",
            "ActivityDefinition Measure OperationDefinition PlanDefinition Questionnaire",
            "Protocol or definition followed",
        ),
        (
            "instantiates-uri",
            "uri",
            "Communication.instantiatesUri",
            "",
            "External protocol or definition followed",
        ),
        ("medium", "token", "Communication.medium", "", "Channel used"),
        ("part-of", "reference", "Communication.partOf", "Any", "Larger event this is part of"),
        (
            "patient",
            "reference",
            "Communication.subject.where(resolve() is Patient)",
            "Patient",
            "Patient the communication is about",
        ),
        ("received", "date", "Communication.received", "", "When it was received"),
        (
            "recipient",
            "reference",
            "Communication.recipient",
            "CareTeam Device Group HealthcareService Organization Patient Practitioner PractitionerRole"
            " RelatedPerson",
            "Who received the message",
        ),
        (
            "sender",
            "reference",
            "Communication.sender",
            "Device HealthcareService Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who sent the message",
        ),
        ("sent", "date", "Communication.sent", "", "When it was sent"),
        ("status", "token", "Communication.status", "", "Status of the communication"),
        ("subject", "reference", "Communication.subject", SUBJECT_GP, "Focus of the message"),
    ],
    "DocumentReference": [
        (
            "authenticator",
            "reference",
            "DocumentReference.authenticator",
            "Organization Practitioner PractitionerRole",
            "Who authenticated the document",
        ),
        (
            "author",
            "reference",
            "DocumentReference.author",
            "Device Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who wrote the document",
        ),
        ("category", "token", "DocumentReference.category", "", "Categorization of the document"),
        (
            "contenttype",
            "token",
            "DocumentReference.content.attachment.contentType",
            "",
            "MIME type of the content",
        ),
        (
            "custodian",
            "reference",
            "DocumentReference.custodian",
            "Organization",
            "Organization that maintains the document",
        ),
        ("date", "date", "DocumentReference.date", "", "When the reference was created"),
        ("description", "string", "DocumentReference.description", "", "Description of the document"),
        ("event", "token", "DocumentReference.context.event", "", "Main clinical act documented"),
        (
            "facility",
            "token",
            "DocumentReference.context.facilityType",
            "",
            "Kind of facility where the document originated",
        ),
        (
            "format",
            "token",
            "DocumentReference.content.format",
            "",
            "Format or content rules of the document",
        ),
        (
            "language",
            "token",
            "DocumentReference.content.attachment.language",
            "",
            "Language of the content",
        ),
        (
            "location",
            "uri",
            "DocumentReference.content.attachment.url",
            "",
            "Where the content can be fetched",
        ),
        ("period", "date", "DocumentReference.context.period", "", "Time of service documented"),
        (
            "related",
            "reference",
            "DocumentReference.context.related",
            "Any",
            "A related resource",
        ),
        (
            "relatesto",
            "reference",
            "DocumentReference.relatesTo.target",
            "DocumentReference",
            "Another document this one relates to",
        ),
        ("relation", "token", "DocumentReference.relatesTo.code", "", "How it relates to another document"),
        ("security-label", "token", "DocumentReference.securityLabel", "", "Security label of the document"),
        (
            "setting",
            "token",
            "DocumentReference.context.practiceSetting",
            "",
            "Clinical specialty setting of the document",
        ),
        ("status", "token", "DocumentReference.status", "", "Status of the reference"),
        (
            "subject",
            "reference",
            "DocumentReference.subject",
            "Device Group Patient Practitioner",
            "Who or what the document is about",
        ),
    ],
    "PlanDefinition": [
        *_definition_params("PlanDefinition", True),
        (
            "definition",
            "reference",
            "PlanDefinition.action.definition",
            "ActivityDefinition PlanDefinition Questionnaire",
            "Definition of an action",
        ),
        ("type", "token", "PlanDefinition.type", "", "Kind of plan definition"),
    ],
    "ActivityDefinition": _definition_params("ActivityDefinition", True),
    "RequestGroup": [
        (
            "author",
            "reference",
            "RequestGroup.author",
            "Device Practitioner PractitionerRole",
            "Who authored the request group",
        ),
        ("authored", "date", "RequestGroup.authoredOn", "", "When the request group was created"),
        ("code", "token", "RequestGroup.code", "", "What the request group is about"),
        ("encounter", "reference", "RequestGroup.encounter", "Encounter", "Encounter it relates to"),
        ("group-identifier", "token", "RequestGroup.groupIdentifier", "", "Composite (group) identifier"),
        ("identifier", "token", "RequestGroup.identifier", "", "A business identifier"),
        (
            "instantiates-canonical",
            "reference",
            "RequestGroup.instantiatesCanonical",
            "",
            "Definition followed",
        ),
        ("instantiates-uri", "uri", "RequestGroup.instantiatesUri", "", "External definition followed"),
        ("intent", "token", "RequestGroup.intent", "", "Intent of the request group"),
        (
            "participant",
            "reference",
            "RequestGroup.action.participant",
            "Device Patient Practitioner PractitionerRole RelatedPerson",
            "A participant in an action",
        ),
        (
            "patient",
            "reference",
            "RequestGroup.subject.where(resolve() is Patient)",
            "Patient",
            "Patient the request group is for",
        ),
        ("priority", "token", "RequestGroup.priority", "", "Urgency of the request group"),
        ("status", "token", "RequestGroup.status", "", "Status of the request group"),
        ("subject", "reference", "RequestGroup.subject", SUBJECT_GP, "Who the request group is for"),
    ],
    "Questionnaire": [
        *_definition_params("Questionnaire", False),
        ("code", "token", "Questionnaire.item.code", "", "A code attached to a question or group"),
        ("definition", "uri", "Questionnaire.item.definition", "", "Element definition an item maps to"),
        ("subject-type", "token", "Questionnaire.subjectType", "", "Resource types that can be the subject"),
    ],
    "QuestionnaireResponse": [
        (
            "author",
            "reference",
            "QuestionnaireResponse.author",
            "Device Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who recorded the answers",
        ),
        ("authored", "date", "QuestionnaireResponse.authored", "", "When the answers were recorded"),
        (
            "based-on",
            "reference",
            "QuestionnaireResponse.basedOn",
            "CarePlan ServiceRequest",
            "Request this response fulfils",
        ),
        (
            "encounter",
            "reference",
            "QuestionnaireResponse.encounter",
            "Encounter",
            "Encounter the response was given in",
        ),
        ("identifier", "token", "QuestionnaireResponse.identifier", "", "A business identifier"),
        (
            "part-of",
            "reference",
            "QuestionnaireResponse.partOf",
            "Observation Procedure",
            "Larger event this response is part of",
        ),
        (
            "patient",
            "reference",
            "QuestionnaireResponse.subject.where(resolve() is Patient)",
            "Patient",
            "Patient the answers are about",
        ),
        (
            "questionnaire",
            "reference",
            "QuestionnaireResponse.questionnaire",
            "Questionnaire",
            "Questionnaire that was answered",
        ),
        (
            "source",
            "reference",
            "QuestionnaireResponse.source",
            "Patient Practitioner PractitionerRole RelatedPerson",
            "Who provided the answers",
        ),
        ("status", "token", "QuestionnaireResponse.status", "", "Status of the response"),
        ("subject", "reference", "QuestionnaireResponse.subject", "Any", "Who or what the answers are about"),
    ],
    "Consent": [
        ("action", "token", "Consent.provision.action", "", "Action controlled by the consent"),
        (
            "actor",
            "reference",
            "Consent.provision.actor.reference",
            "CareTeam Device Group Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who the rule applies to",
        ),
        ("category", "token", "Consent.category", "", "Classification of the consent"),
        (
            "consentor",
            "reference",
            "Consent.performer",
            "Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who is agreeing to the policy",
        ),
        ("data", "reference", "Consent.provision.data.reference", "Any", "Specific data controlled"),
        (
            "organization",
            "reference",
            "Consent.organization",
            "Organization",
            "Custodian of the consent",
        ),
        ("period", "date", "Consent.provision.period", "", "Timeframe the consent applies to"),
        ("purpose", "token", "Consent.provision.purpose", "", "Purpose of use covered"),
        ("scope", "token", "Consent.scope", "", "Which of the four areas the consent covers"),
        ("security-label", "token", "Consent.provision.securityLabel", "", "Security label covered"),
        (
            "source-reference",
            "reference",
            "Consent.source",
            "Consent Contract DocumentReference QuestionnaireResponse",
            "Source from which the consent was taken",
        ),
        ("status", "token", "Consent.status", "", "Status of the consent"),
    ],
    "AuditEvent": [
        ("action", "token", "AuditEvent.action", "", "Type of action performed"),
        ("address", "string", "AuditEvent.agent.network.address", "", "Network address of an agent"),
        (
            "agent",
            "reference",
            "AuditEvent.agent.who",
            "Device Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who took part in the event",
        ),
        ("agent-name", "string", "AuditEvent.agent.name", "", "Human-readable name of an agent"),
        ("agent-role", "token", "AuditEvent.agent.role", "", "Role of an agent"),
        ("altid", "token", "AuditEvent.agent.altId", "", "Alternative user identity of an agent"),
        ("date", "date", "AuditEvent.recorded", "", "When the event was recorded"),
        ("entity", "reference", "AuditEvent.entity.what", "Any", "A resource involved in the event"),
        ("entity-name", "string", "AuditEvent.entity.name", "", "Name of an entity"),
        ("entity-role", "token", "AuditEvent.entity.role", "", "Role of an entity"),
        ("entity-type", "token", "AuditEvent.entity.type", "", "Type of an entity"),
        ("outcome", "token", "AuditEvent.outcome", "", "Whether the event succeeded"),
        (
            "patient",
            "reference",
            "AuditEvent.agent.who.where(resolve() is Patient)"
            " | AuditEvent.entity.what.where(resolve() is Patient)",
            "Patient",
            "Patient involved as agent or entity",
        ),
        ("policy", "uri", "AuditEvent.agent.policy", "", "Policy that authorized an agent"),
        ("site", "token", "AuditEvent.source.site", "", "Logical source location"),
        (
            "source",
            "reference",
            "AuditEvent.source.observer",
            "Device Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who reported the event",
        ),
        ("subtype", "token", "AuditEvent.subtype", "", "More specific type of event"),
        ("type", "token", "AuditEvent.type", "", "Type of event"),
    ],
    "Provenance": [
        (
            "agent",
            "reference",
            "Provenance.agent.who",
            "Device Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who took part in the activity",
        ),
        ("agent-role", "token", "Provenance.agent.role", "", "Role an agent played"),
        ("agent-type", "token", "Provenance.agent.type", "", "How an agent took part"),
        ("entity", "reference", "Provenance.entity.what", "Any", "A resource used in the activity"),
        ("location", "reference", "Provenance.location", "Location", "Where the activity happened"),
        (
            "patient",
            "reference",
            "Provenance.target.where(resolve() is Patient)",
            "Patient",
            "Patient whose record was affected",
        ),
        ("recorded", "date", "Provenance.recorded", "", "When the activity was recorded"),
        (
            "signature-type",
            "token",
            "Provenance.signature.type",
            "",
            "Indication of the reason for a signature",
        ),
        ("target", "reference", "Provenance.target", "Any", "Resource the provenance is about"),
        ("when", "date", "(Provenance.occurred as dateTime)", "", "When the activity happened"),
    ],
    "Subscription": [
        ("contact", "token", "Subscription.contact", "", "Contact for the subscription"),
        ("criteria", "string", "Subscription.criteria", "", "Search criteria of the subscription"),
        ("payload", "token", "Subscription.channel.payload", "", "MIME type of notification payloads"),
        ("status", "token", "Subscription.status", "", "Status of the subscription"),
        ("type", "token", "Subscription.channel.type", "", "Kind of channel used"),
        ("url", "uri", "Subscription.channel.endpoint", "", "Endpoint notifications are sent to"),
    ],
    "MessageHeader": [
        (
            "author",
            "reference",
            "MessageHeader.author",
            PRACTITIONERS,
            "Who is responsible for the decision",
        ),
        ("code", "token", "MessageHeader.response.code", "", "Outcome code of a response"),
        ("destination", "string", "MessageHeader.destination.name", "", "Name of a destination system"),
        ("destination-uri", "uri", "MessageHeader.destination.endpoint", "", "Actual destination address"),
        (
            "enterer",
            "reference",
            "MessageHeader.enterer",
            PRACTITIONERS,
            "Who entered the data",
        ),
        ("event", "token", "MessageHeader.event", "", "Event the message represents"),
        ("focus", "reference", "MessageHeader.focus", "Any", "Actual content of the message"),
        (
            "receiver",
            "reference",
            "MessageHeader.destination.receiver",
            "Organization Practitioner PractitionerRole",
            "Intended real-world recipient",
        ),
        ("response-id", "token", "MessageHeader.response.identifier", "", "Id of the message answered"),
        (
            "responsible",
            "reference",
            "MessageHeader.responsible",
            "Organization Practitioner PractitionerRole",
            "Final party responsible for the event",
        ),
        (
            "sender",
            "reference",
            "MessageHeader.sender",
            "Organization Practitioner PractitionerRole",
            "Real-world sender of the message",
        ),
        ("source", "string", "MessageHeader.source.name", "", "Name of the source system"),
        ("source-uri", "uri", "MessageHeader.source.endpoint", "", "Actual source address"),
        ("target", "reference", "MessageHeader.destination.target", "Device", "Particular delivery target"),
    ],
    "Appointment": [
        (
            "actor",
            "reference",
            "Appointment.participant.actor",
            "Device HealthcareService Location Patient Practitioner PractitionerRole RelatedPerson",
            "A participant of the appointment",
        ),
        ("appointment-type", "token", "Appointment.appointmentType", "", "Style of appointment"),
        (
            "based-on",
            "reference",
            "Appointment.basedOn",
            "ServiceRequest",
            "Request the appointment is for",
        ),
        ("date", "date", "Appointment.start", "", "When the appointment starts"),
        ("identifier", "token", "Appointment.identifier", "", "A business identifier"),
        (
            "location",
            "reference",
            "Appointment.participant.actor.where(resolve() is Location)",
            "Location",
            "Location of the appointment",
        ),
        ("part-status", "token", "Appointment.participant.status", "", "A participant's response status"),
        (
            "patient",
            "reference",
            "Appointment.participant.actor.where(resolve() is Patient)",
            "Patient",
            "A patient taking part",
        ),
        (
            "practitioner",
            "reference",
            "Appointment.participant.actor.where(resolve() is Practitioner)",
            "Practitioner",
            "A practitioner taking part",
        ),
        ("reason-code", "token", "Appointment.reasonCode", "", "Coded reason for the appointment"),
        (
            "reason-reference",
            "reference",
            "Appointment.reasonReference",
            "Condition ImmunizationRecommendation Observation Procedure",
            "Resource giving the reason",
        ),
        ("service-category", "token", "Appointment.serviceCategory", "", "Broad category of service"),
        ("service-type", "token", "Appointment.serviceType", "", "Specific service to be performed"),
        ("slot", "reference", "Appointment.slot", "Slot", "Slot the appointment fills"),
        ("specialty", "token", "Appointment.specialty", "", "Specialty needed"),
        ("status", "token", "Appointment.status", "", "Status of the appointment"),
        (
            "supporting-info",
            "reference",
            "Appointment.supportingInformation",
            "Any",
            "Additional supporting information",
        ),
    ],
    "Slot": [
        ("appointment-type", "token", "Slot.appointmentType", "", "Style of appointment that may be booked"),
        ("identifier", "token", "Slot.identifier", "", "A business identifier"),
        ("schedule", "reference", "Slot.schedule", "Schedule", "Schedule the slot belongs to"),
        ("service-category", "token", "Slot.serviceCategory", "", "Broad category of service"),
        ("service-type", "token", "Slot.serviceType", "", "Kind of service that may be booked"),
        ("specialty", "token", "Slot.specialty", "", "Specialty of the service"),
        ("start", "date", "Slot.start", "", "When the slot begins"),
        ("status", "token", "Slot.status", "", "Free/busy status"),
    ],
    "Schedule": [
        ("active", "token", "Schedule.active", "", "Whether the schedule is in active use"),
        (
            "actor",
            "reference",
            "Schedule.actor",
            "Device HealthcareService Location Patient Practitioner PractitionerRole RelatedPerson",
            "Resource the schedule is for",
        ),
        ("date", "date", "Schedule.planningHorizon", "", "Period the schedule covers"),
        ("identifier", "token", "Schedule.identifier", "", "A business identifier"),
        ("service-category", "token", "Schedule.serviceCategory", "", "Broad category of service"),
        ("service-type", "token", "Schedule.serviceType", "", "Kind of service offered"),
        ("specialty", "token", "Schedule.specialty", "", "Specialty of the service"),
    ],
    "Device": [
        (
            "device-name",
            "string",
            "Device.deviceName.name | Device.type.coding.display | Device.type.text",
            "",
            "Name of the device or of its type",
        ),
        ("identifier", "token", "Device.identifier", "", "A business identifier"),
        ("location", "reference", "Device.location", "Location", "Where the device is"),
        ("manufacturer", "string", "Device.manufacturer", "", "Manufacturer name"),
        ("model", "string", "Device.modelNumber", "", "Model number"),
        ("organization", "reference", "Device.owner", "Organization", "Organization owning the device"),
        ("patient", "reference", "Device.patient", "Patient", "Patient the device is affixed to"),
        ("status", "token", "Device.status", "", "Status of the device"),
        ("type", "token", "Device.type", "", "Kind of device"),
        ("udi-carrier", "string", "Device.udiCarrier.carrierHRF", "", "UDI barcode string"),
        ("udi-di", "string", "Device.udiCarrier.deviceIdentifier", "", "UDI device identifier"),
        ("url", "uri", "Device.url", "", "Network address of the device"),
    ],
    "Basic": [
        (
            "author",
            "reference",
            "Basic.author",
            "Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who created the resource",
        ),
        ("code", "token", "Basic.code", "", "Kind of resource"),
        ("created", "date", "Basic.created", "", "When the resource was created"),
        ("identifier", "token", "Basic.identifier", "", "A business identifier"),
        (
            "patient",
            "reference",
            "Basic.subject.where(resolve() is Patient)",
            "Patient",
            "Patient the resource is about",
        ),
        ("subject", "reference", "Basic.subject", "Any", "What the resource is about"),
    ],
    "Bundle": [
        (
            "composition",
            "reference",
            "Bundle.entry[0].resource",
            "Composition",
            "The first entry of a document bundle",
        ),
        ("identifier", "token", "Bundle.identifier", "", "Persistent identifier of the bundle"),
        (
            "message",
            "reference",
            "Bundle.entry[0].resource",
            "MessageHeader",
            "The first entry of a message bundle",
        ),
        ("timestamp", "date", "Bundle.timestamp", "", "When the bundle was assembled"),
        ("type", "token", "Bundle.type", "", "Kind of bundle"),
    ],
    "Immunization": [
        ("location", "reference", "Immunization.location", "Location", "Where the vaccine was given"),
        ("lot-number", "string", "Immunization.lotNumber", "", "Vaccine lot number"),
        (
            "manufacturer",
            "reference",
            "Immunization.manufacturer",
            "Organization",
            "Vaccine manufacturer",
        ),
        (
            "performer",
            "reference",
            "Immunization.performer.actor",
            "Organization Practitioner PractitionerRole",
            "Who gave the vaccine",
        ),
        ("reaction", "reference", "Immunization.reaction.detail", "Observation", "Details of a reaction"),
        ("reaction-date", "date", "Immunization.reaction.date", "", "When a reaction started"),
        ("reason-code", "token", "Immunization.reasonCode", "", "Why the vaccine was given"),
        (
            "reason-reference",
            "reference",
            "Immunization.reasonReference",
            "Condition DiagnosticReport Observation",
            "Resource explaining why it was given",
        ),
        ("series", "string", "Immunization.protocolApplied.series", "", "Name of the vaccine series"),
        ("status", "token", "Immunization.status", "", "Status of the immunization"),
        ("status-reason", "token", "Immunization.statusReason", "", "Why it was not given"),
        (
            "target-disease",
            "token",
            "Immunization.protocolApplied.targetDisease",
            "",
            "Disease the dose protects against",
        ),
        ("vaccine-code", "token", "Immunization.vaccineCode", "", "Vaccine product given"),
    ],
    "DiagnosticReport": [
        (
            "based-on",
            "reference",
            "DiagnosticReport.basedOn",
            "CarePlan ImmunizationRecommendation MedicationRequest NutritionOrder ServiceRequest",
            "Request the report answers",
        ),
        ("category", "token", "DiagnosticReport.category", "", "Service category of the report"),
        ("conclusion", "token", "DiagnosticReport.conclusionCode", "", "Coded conclusion"),
        ("issued", "date", "DiagnosticReport.issued", "", "When the report was released"),
        ("media", "reference", "DiagnosticReport.media.link", "Media", "An image attached to the report"),
        (
            "performer",
            "reference",
            "DiagnosticReport.performer",
            "CareTeam Organization Practitioner PractitionerRole",
            "Who is responsible for the report",
        ),
        ("result", "reference", "DiagnosticReport.result", "Observation", "An observation in the report"),
        (
            "results-interpreter",
            "reference",
            "DiagnosticReport.resultsInterpreter",
            "CareTeam Organization Practitioner PractitionerRole",
            "Who interpreted the results",
        ),
        (
            "specimen",
            "reference",
            "DiagnosticReport.specimen",
            "Specimen",
            "A specimen the report is based on",
        ),
        ("status", "token", "DiagnosticReport.status", "", "Status of the report"),
        (
            "subject",
            "reference",
            "DiagnosticReport.subject",
            "Device Group Location Patient",
            "Who or what the report is about",
        ),
    ],
    "Claim": [
        (
            "care-team",
            "reference",
            "Claim.careTeam.provider",
            "Organization Practitioner PractitionerRole",
            "A member of the care team",
        ),
        ("created", "date", "Claim.created", "", "When the claim was created"),
        ("detail-udi", "reference", "Claim.item.detail.udi", "Device", "UDI code of a detail line"),
        ("encounter", "reference", "Claim.item.encounter", "Encounter", "Encounter of a line item"),
        ("enterer", "reference", "Claim.enterer", PRACTITIONERS, "Who entered the claim"),
        ("facility", "reference", "Claim.facility", "Location", "Facility where services were provided"),
        ("identifier", "token", "Claim.identifier", "", "A business identifier"),
        ("insurer", "reference", "Claim.insurer", "Organization", "Target insurer"),
        ("item-udi", "reference", "Claim.item.udi", "Device", "UDI code of a line item"),
        ("patient", "reference", "Claim.patient", "Patient", "Patient the claim is for"),
        (
            "payee",
            "reference",
            "Claim.payee.party",
            "Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who should be paid",
        ),
        ("priority", "token", "Claim.priority", "", "Processing priority"),
        ("procedure-udi", "reference", "Claim.procedure.udi", "Device", "UDI code of a procedure"),
        (
            "provider",
            "reference",
            "Claim.provider",
            "Organization Practitioner PractitionerRole",
            "Provider responsible for the claim",
        ),
        ("status", "token", "Claim.status", "", "Status of the claim"),
        (
            "subdetail-udi",
            "reference",
            "Claim.item.detail.subDetail.udi",
            "Device",
            "UDI code of a sub-detail",
        ),
        ("use", "token", "Claim.use", "", "Kind of claim (claim, preauthorization, predetermination)"),
    ],
    "ExplanationOfBenefit": [
        (
            "care-team",
            "reference",
            "ExplanationOfBenefit.careTeam.provider",
            "Organization Practitioner PractitionerRole",
            "A member of the care team",
        ),
        ("claim", "reference", "ExplanationOfBenefit.claim", "Claim", "Claim that was adjudicated"),
        (
            "coverage",
            "reference",
            "ExplanationOfBenefit.insurance.coverage",
            "Coverage",
            "Insurance coverage used",
        ),
        ("created", "date", "ExplanationOfBenefit.created", "", "When the explanation was created"),
        (
            "detail-udi",
            "reference",
            "ExplanationOfBenefit.item.detail.udi",
            "Device",
            "UDI code of a detail line",
        ),
        ("disposition", "string", "ExplanationOfBenefit.disposition", "", "Disposition message"),
        (
            "encounter",
            "reference",
            "ExplanationOfBenefit.item.encounter",
            "Encounter",
            "Encounter of a line item",
        ),
        ("enterer", "reference", "ExplanationOfBenefit.enterer", PRACTITIONERS, "Who entered the claim"),
        ("facility", "reference", "ExplanationOfBenefit.facility", "Location", "Facility of the services"),
        ("identifier", "token", "ExplanationOfBenefit.identifier", "", "A business identifier"),
        ("item-udi", "reference", "ExplanationOfBenefit.item.udi", "Device", "UDI code of a line item"),
        ("patient", "reference", "ExplanationOfBenefit.patient", "Patient", "Patient the claim is for"),
        (
            "payee",
            "reference",
            "ExplanationOfBenefit.payee.party",
            "Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who is paid",
        ),
        (
            "procedure-udi",
            "reference",
            "ExplanationOfBenefit.procedure.udi",
            "Device",
            "UDI code of a procedure",
        ),
        (
            "provider",
            "reference",
            "ExplanationOfBenefit.provider",
            "Organization Practitioner PractitionerRole",
            "Provider responsible for the claim",
        ),
        ("status", "token", "ExplanationOfBenefit.status", "", "Status of the explanation"),
        (
            "subdetail-udi",
            "reference",
            "ExplanationOfBenefit.item.detail.subDetail.udi",
            "Device",
            "UDI code of a sub-detail",
        ),
    ],
    "Coverage": [
        ("beneficiary", "reference", "Coverage.beneficiary", "Patient", "Who benefits from the coverage"),
        ("class-type", "token", "Coverage.class.type", "", "Type of a coverage class (group, plan, ...)"),
        ("class-value", "string", "Coverage.class.value", "", "Value of a coverage class"),
        ("dependent", "string", "Coverage.dependent", "", "Dependent number"),
        ("identifier", "token", "Coverage.identifier", "", "A business identifier"),
        ("patient", "reference", "Coverage.beneficiary", "Patient", "Patient covered"),
        (
            "payor",
            "reference",
            "Coverage.payor",
            "Organization Patient RelatedPerson",
            "Who issues the coverage",
        ),
        (
            "policy-holder",
            "reference",
            "Coverage.policyHolder",
            "Organization Patient RelatedPerson",
            "Owner of the policy",
        ),
        ("status", "token", "Coverage.status", "", "Status of the coverage"),
        (
            "subscriber",
            "reference",
            "Coverage.subscriber",
            "Patient RelatedPerson",
            "Subscriber to the policy",
        ),
        ("type", "token", "Coverage.type", "", "Kind of coverage"),
    ],
    "ImagingStudy": [
        (
            "basedon",
            "reference",
            "ImagingStudy.basedOn",
            "Appointment AppointmentResponse CarePlan ServiceRequest Task",
            "Request the study fulfils",
        ),
        ("bodysite", "token", "ImagingStudy.series.bodySite", "", "Body part examined by a series"),
        (
            "dicom-class",
            "token",
            "ImagingStudy.series.instance.sopClass",
            "",
            "DICOM SOP class of an instance",
        ),
        ("encounter", "reference", "ImagingStudy.encounter", "Encounter", "Encounter of the study"),
        (
            "endpoint",
            "reference",
            "ImagingStudy.endpoint | ImagingStudy.series.endpoint",
            "Endpoint",
            "Endpoint giving access to the study or a series",
        ),
        ("instance", "token", "ImagingStudy.series.instance.uid", "", "SOP instance UID"),
        (
            "interpreter",
            "reference",
            "ImagingStudy.interpreter",
            PRACTITIONERS,
            "Who read the study",
        ),
        ("modality", "token", "ImagingStudy.series.modality", "", "Modality of a series"),
        (
            "performer",
            "reference",
            "ImagingStudy.series.performer.actor",
            "CareTeam Device Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who performed a series",
        ),
        ("reason", "token", "ImagingStudy.reasonCode", "", "Why the study was requested"),
        ("referrer", "reference", "ImagingStudy.referrer", PRACTITIONERS, "Referring physician"),
        ("series", "token", "ImagingStudy.series.uid", "", "DICOM series instance UID"),
        ("started", "date", "ImagingStudy.started", "", "When the study started"),
        ("status", "token", "ImagingStudy.status", "", "Status of the study"),
        ("subject", "reference", "ImagingStudy.subject", "Device Group Patient", "Who the study is about"),
    ],
    "SupplyDelivery": [
        ("receiver", "reference", "SupplyDelivery.receiver", PRACTITIONERS, "Who received the supply"),
        ("status", "token", "SupplyDelivery.status", "", "Status of the delivery"),
        (
            "supplier",
            "reference",
            "SupplyDelivery.supplier",
            "Organization Practitioner PractitionerRole",
            "Who supplied the item",
        ),
    ],
    "RelatedPerson": [
        ("active", "token", "RelatedPerson.active", "", "Whether the record is in active use"),
        ("identifier", "token", "RelatedPerson.identifier", "", "A business identifier"),
        ("name", "string", "RelatedPerson.name", "", "Any part of the person's name"),
        ("patient", "reference", "RelatedPerson.patient", "Patient", "Patient the person is related to"),
        ("relationship", "token", "RelatedPerson.relationship", "", "Nature of the relationship"),
    ],
    "Group": [
        ("actual", "token", "Group.actual", "", "Whether the group lists actual members"),
        ("characteristic", "token", "Group.characteristic.code", "", "Kind of a defining characteristic"),
        ("code", "token", "Group.code", "", "Kind of members"),
        ("exclude", "token", "Group.characteristic.exclude", "", "Whether a characteristic is excluded"),
        ("identifier", "token", "Group.identifier", "", "A business identifier"),
        (
            "managing-entity",
            "reference",
            "Group.managingEntity",
            "Organization Practitioner PractitionerRole RelatedPerson",
            "Who maintains the group",
        ),
        (
            "member",
            "reference",
            "Group.member.entity",
            "Device Group Medication Patient Practitioner PractitionerRole Substance",
            "A member of the group",
        ),
        ("type", "token", "Group.type", "", "Type of members"),
        (
            "value",
            "token",
            "(Group.characteristic.value as CodeableConcept) | (Group.characteristic.value as boolean)",
            "",
            "Value of a characteristic",
        ),
    ],
    "List": [
        ("empty-reason", "token", "List.emptyReason", "", "Why the list is empty"),
        ("item", "reference", "List.entry.item", "Any", "An item in the list"),
        ("notes", "string", "List.note.text", "", "Text in the list's notes"),
        (
            "source",
            "reference",
            "List.source",
            "Device Patient Practitioner PractitionerRole",
            "Who defined the list",
        ),
        ("status", "token", "List.status", "", "Status of the list"),
        (
            "subject",
            "reference",
            "List.subject",
            "Device Group Location Patient",
            "What the list is about",
        ),
        ("title", "string", "List.title", "", "Title of the list"),
    ],
    "Composition": [
        (
            "attester",
            "reference",
            "Composition.attester.party",
            "Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who attested the composition",
        ),
        (
            "author",
            "reference",
            "Composition.author",
            "Device Organization Patient Practitioner PractitionerRole RelatedPerson",
            "Who wrote the composition",
        ),
        ("category", "token", "Composition.category", "", "Categorization of the composition"),
        ("confidentiality", "token", "Composition.confidentiality", "", "Confidentiality classification"),
        ("context", "token", "Composition.event.code", "", "Main clinical act documented"),
        ("entry", "reference", "Composition.section.entry", "Any", "A resource referenced from a section"),
        ("period", "date", "Composition.event.period", "", "Period covered by the documentation"),
        (
            "related-id",
            "token",
            "(Composition.relatesTo.target as Identifier)",
            "",
            "Identifier of a related composition",
        ),
        (
            "related-ref",
            "reference",
            "(Composition.relatesTo.target as Reference)",
            "Composition",
            "A related composition",
        ),
        ("section", "token", "Composition.section.code", "", "Kind of a section"),
        ("status", "token", "Composition.status", "", "Status of the composition"),
        ("subject", "reference", "Composition.subject", "Any", "Who or what the composition is about"),
        ("title", "string", "Composition.title", "", "Title of the composition"),
    ],
    "StructureDefinition": [
        ("abstract", "token", "StructureDefinition.abstract", "", "Whether the structure is abstract"),
        (
            "base",
            "reference",
            "StructureDefinition.baseDefinition",
            "StructureDefinition",
            "Definition this one is based on",
        ),
        (
            "base-path",
            "token",
            "StructureDefinition.snapshot.element.base.path"
            " | StructureDefinition.differential.element.base.path",
            "",
            "Base path of an element",
        ),
        ("derivation", "token", "StructureDefinition.derivation", "", "Specialization or constraint"),
        ("experimental", "token", "StructureDefinition.experimental", "", "Whether it is for testing only"),
        ("ext-context", "token", "StructureDefinition.context.type", "", "Kind of context an extension uses"),
        ("keyword", "token", "StructureDefinition.keyword", "", "A code describing the structure"),
        ("kind", "token", "StructureDefinition.kind", "", "Kind of structure"),
        (
            "path",
            "token",
            "StructureDefinition.snapshot.element.path | StructureDefinition.differential.element.path",
            "",
            "Path of an element",
        ),
        ("type", "uri", "StructureDefinition.type", "", "Type the structure defines or constrains"),
        (
            "valueset",
            "reference",
            "StructureDefinition.snapshot.element.binding.valueSet",
            "ValueSet",
            "A value set bound to an element",
        ),
    ],
    "ValueSet": [
        (
            "code",
            "token",
            "ValueSet.expansion.contains.code | ValueSet.compose.include.concept.code",
            "",
            "A code in the value set or its expansion",
        ),
        ("expansion", "uri", "ValueSet.expansion.identifier", "", "Identifier of an expansion"),
        ("reference", "uri", "ValueSet.compose.include.system", "", "A code system included"),
    ],
    "CodeSystem": [
        ("code", "token", "CodeSystem.concept.code", "", "A code defined by the code system"),
        ("content-mode", "token", "CodeSystem.content", "", "How much content the resource holds"),
        ("language", "token", "CodeSystem.concept.designation.language", "", "Language of a designation"),
        (
            "supplements",
            "reference",
            "CodeSystem.supplements",
            "CodeSystem",
            "Code system this one supplements",
        ),
        ("system", "uri", "CodeSystem.url", "", "URL of the code system"),
    ],
    "SearchParameter": [
        ("base", "token", "SearchParameter.base", "", "Resource type the parameter applies to"),
        ("code", "token", "SearchParameter.code", "", "Code used in the URL"),
        (
            "component",
            "reference",
            "SearchParameter.component.definition",
            "SearchParameter",
            "A component of a composite parameter",
        ),
        (
            "derived-from",
            "reference",
            "SearchParameter.derivedFrom",
            "SearchParameter",
            "Parameter this one is derived from",
        ),
        ("target", "token", "SearchParameter.target", "", "A resource type a reference may point to"),
        ("type", "token", "SearchParameter.type", "", "Type of the parameter"),
    ],
    "OperationDefinition": [
        (
            "base",
            "reference",
            "OperationDefinition.base",
            "OperationDefinition",
            "Operation this one is based on",
        ),
        ("code", "token", "OperationDefinition.code", "", "Name used to invoke the operation"),
        (
            "input-profile",
            "reference",
            "OperationDefinition.inputProfile",
            "StructureDefinition",
            "Validation profile for the input",
        ),
        ("instance", "token", "OperationDefinition.instance", "", "Whether it can be invoked on an instance"),
        ("kind", "token", "OperationDefinition.kind", "", "Operation or named query"),
        (
            "output-profile",
            "reference",
            "OperationDefinition.outputProfile",
            "StructureDefinition",
            "Validation profile for the output",
        ),
        ("system", "token", "OperationDefinition.system", "", "Whether it can be invoked at system level"),
        ("type", "token", "OperationDefinition.type", "", "Whether it can be invoked on a type"),
    ],
    "CapabilityStatement": [
        ("fhirversion", "token", "CapabilityStatement.version", "", "FHIR version supported"),
        ("format", "token", "CapabilityStatement.format", "", "A supported format"),
        (
            "guide",
            "reference",
            "CapabilityStatement.implementationGuide",
            "ImplementationGuide",
            "An implementation guide supported",
        ),
        ("mode", "token", "CapabilityStatement.rest.mode", "", "Client or server mode"),
        ("resource", "token", "CapabilityStatement.rest.resource.type", "", "A resource type supported"),
        (
            "resource-profile",
            "reference",
            "CapabilityStatement.rest.resource.profile",
            "StructureDefinition",
            "A base profile used for a resource type",
        ),
        (
            "security-service",
            "token",
            "CapabilityStatement.rest.security.service",
            "",
            "A security service supported",
        ),
        ("software", "string", "CapabilityStatement.software.name", "", "Name of the software"),
        (
            "supported-profile",
            "reference",
            "CapabilityStatement.rest.resource.supportedProfile",
            "StructureDefinition",
            "A supported profile",
        ),
    ],
}

# ---------------------------------------------------------------------------------------------
# Emitting the bundle
# ---------------------------------------------------------------------------------------------

_PART_TYPE = re.compile(r"^\(*\s*([A-Z][A-Za-z]*)\.")


def _split_union(expression: str) -> list[str]:
    """Split ``expression`` at top-level ``|`` operators."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in expression:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def base_types(expression: str) -> list[str]:
    """Resource types named at the head of each union branch, in order of first appearance."""
    types: list[str] = []
    for part in _split_union(expression):
        match = _PART_TYPE.match(part)
        if match is None:
            raise ValueError(f"cannot find the resource type of {part!r}")
        if match.group(1) not in types:
            types.append(match.group(1))
    return types


def _targets(spec: str) -> list[str]:
    names = spec.split()
    if names == ["Any"]:
        return list(ALL_RESOURCE_TYPES)
    return sorted(names)


def search_parameter(
    sp_id: str, code: str, sp_type: str, expression: str, targets: str, description: str
) -> dict[str, Any]:
    """Build one SearchParameter resource."""
    resource: dict[str, Any] = {
        "resourceType": "SearchParameter",
        "id": sp_id,
        "url": URL_PREFIX + sp_id,
        "version": FHIR_VERSION,
        "name": code,
        "status": "active",
        "description": description,
        "code": code,
        "base": base_types(expression),
        "type": sp_type,
        "expression": expression,
        "xpathUsage": "normal",
        "multipleOr": True,
        "modifier": list(MODIFIERS[sp_type]),
    }
    if sp_type in TYPES_WITH_COMPARATORS:
        resource["comparator"] = list(COMPARATORS)
    if sp_type == "reference":
        # R4 gives RequestGroup-instantiates-canonical no target; every other reference has one.
        if targets:
            resource["target"] = _targets(targets)
        resource["chain"] = ["*"]
    elif targets:
        raise ValueError(f"non-reference parameter {sp_id} has targets")
    return resource


def all_search_parameters() -> list[dict[str, Any]]:
    """Every SearchParameter, shared ones first, then per-type ones ordered by type and code."""
    params = [
        search_parameter(sp_id, code, sp_type, " | ".join(parts), targets, description)
        for sp_id, code, sp_type, parts, targets, description in SHARED
    ]
    for rt in sorted(RESOURCE_PARAMS):
        for code, sp_type, expression, targets, description in sorted(RESOURCE_PARAMS[rt]):
            params.append(search_parameter(f"{rt}-{code}", code, sp_type, expression, targets, description))
    _check_unique(params)
    return params


def _check_unique(params: list[dict[str, Any]]) -> None:
    ids: set[str] = set()
    pairs: dict[tuple[str, str], str] = {}
    for param in params:
        if param["id"] in ids:
            raise ValueError(f"duplicate id {param['id']}")
        ids.add(param["id"])
        for base in param["base"]:
            key = (base, param["code"])
            if key in pairs:
                raise ValueError(f"{param['id']} and {pairs[key]} both define {base}:{param['code']}")
            pairs[key] = param["id"]


def bundle() -> dict[str, Any]:
    """The Bundle of all SearchParameters."""
    return {
        "resourceType": "Bundle",
        "id": "search-parameters-r4",
        "type": "collection",
        "entry": [{"fullUrl": p["url"], "resource": p} for p in all_search_parameters()],
    }


def render() -> str:
    """The JSON text written to :data:`OUTPUT`."""
    return json.dumps(bundle(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(bundle()['entry'])} search parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
