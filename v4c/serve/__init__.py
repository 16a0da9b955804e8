"""`v4c serve`: an OpenAI-compatible HTTP server over the runtime's scheduler (`create_app`,
`serve`). FastAPI and uvicorn are imported only here, so `import v4c` stays light."""
