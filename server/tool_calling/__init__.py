"""Tool calling on chat requests: which backend does what (plan.py), the schema that constrains a
required or named call (constraint.py), how tools and calls are rendered for a chat template
(rendering.py), and reading calls out of generated text as it streams (readers.py)."""
