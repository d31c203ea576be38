"""The daily briefing: facts from the marts, a local LLM's selection, WhatsApp delivery and the metrics API."""
