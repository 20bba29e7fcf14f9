"""The daemon's durable state: the state directory (:mod:`.lock`), the backend interface and its
records (:mod:`.backend`), and the embedded SQLite backend (:mod:`.sqlite`)."""
