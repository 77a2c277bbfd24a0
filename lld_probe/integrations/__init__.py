"""The only code that knows a training framework's internals (TRL today)."""
