"""The wire format: the versioned msgpack schema (schema) and the validating decode every frame passes (decode)."""
