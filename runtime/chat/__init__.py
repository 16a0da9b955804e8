"""The DeepSeek-V4 chat format, one wing: messages checked (`messages`), encoded to the
prompt text (`encode`, with DSML tool blocks from `dsml` and the fixed strings of `format`),
and generated text parsed back into an assistant message (`parse`). `run`, `chat` and the
server share it."""
