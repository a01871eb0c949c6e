"""A real small model served offline (``make local-model``): SmolLM2-135M under llama.cpp."""
