"""Generated API code of aion's public contract (proto/aion/v1). Nothing hand-written lives here."""
