"""``python -m ollama_torch.examples.generate_example --prompt "Why is the sky blue?" [--stream]``"""

from __future__ import annotations

import sys

from .common import client, options, parser, resolve_model


def main(argv: list[str] | None = None) -> int:
    args = parser("Generate a completion with /api/generate").parse_args(argv)
    c = client()
    model = resolve_model(c, args.model, args.no_fallback)
    if args.stream:
        for part in c.generate(model=model, prompt=args.prompt, options=options(args), stream=True):
            sys.stdout.write(part.response)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print(c.generate(model=model, prompt=args.prompt, options=options(args)).response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
