"""aion.modules: the module package format, safe unpacking, the module store, and installs."""
