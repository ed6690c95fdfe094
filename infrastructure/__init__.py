"""The CDK app for the chatbot's AWS resources, and the command that wires its outputs into Chalice."""
