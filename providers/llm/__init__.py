"""Language model providers: :mod:`providers.llm.gemini` (google-genai)."""
