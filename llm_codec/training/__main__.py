"""`python -m llm_codec.training --config cfg.yaml --data PATH --output DIR [--resume] [--max-steps N]`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
