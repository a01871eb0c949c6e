"""Operations: health checks, the channel layer and its probe, log format and redaction."""
