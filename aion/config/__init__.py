"""aion.config: reading, checking and modelling a config set (intents, policies, models, modules)."""
