"""A client of the chat service, as any program would speak to it: REST calls (`rest`), the
WebSocket chat protocol (`websocket`) and signing in to the stage's Cognito user pool
(`sign_in`). `make token`, the end-to-end tests, `make bench` and the smoke check all use it, so
they speak to the service the same way."""
