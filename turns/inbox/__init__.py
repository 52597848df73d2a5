"""The inbox: a turn that needs its requester (an approval before an `ask` tool, or a question an
expert asks) pauses here, durably, until the requester answers from any device (CONTRACT.md,
"The inbox: approvals and questions")."""
