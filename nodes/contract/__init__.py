"""The wire contract: message Structs (messages.py), typed topics (topics.py), and the docs generator."""
