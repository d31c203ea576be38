"""Real-model checks of the briefing: an Ollama-compatible server on llama.cpp, and `make eval`."""
