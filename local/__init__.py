"""Local stand-ins for the AWS services the app calls, so it runs offline unchanged."""
