"""The real-services test rig: installers, process management, service fixtures and the pytest plugin."""
