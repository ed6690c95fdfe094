"""Deploy tooling: the Lambda package (`make vendor`), and the commands that deploy, check and remove a stage."""
