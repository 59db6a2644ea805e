"""Intake: encounter events from the doors ($process-message, HL7 v2 over MLLP or HTTP, NdE
CommunicationRequests) filed once per sender and stay, and what a discharge starts (protocols)."""
