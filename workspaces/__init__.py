"""Workspaces, conversations and messages: the config, input and history APIs and the one access check."""
