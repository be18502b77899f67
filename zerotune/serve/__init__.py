"""The OpenAI-compatible server (app.py), its request batching (batcher.py) and content filter (safety.py)."""
