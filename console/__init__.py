"""The console at `/console/`: a web page for people, and the client library it is built on
(`static/cortex/`, plain ES modules). A client of the public contract only: it imports no app."""
