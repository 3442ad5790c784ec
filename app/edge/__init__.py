"""The edge: who may call (auth), from where (CORS), how often (rate limits), and as whom upstream."""
