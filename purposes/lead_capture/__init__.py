"""Lead capture: slot filling, validation, booking and CRM push."""

from purposes.lead_capture.agent import LeadCaptureAgent

__all__ = ["LeadCaptureAgent"]
