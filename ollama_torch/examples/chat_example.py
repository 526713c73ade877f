"""``python -m ollama_torch.examples.chat_example --prompt "Hello!" [--system "..."] [--stream]``"""

from __future__ import annotations

import sys

from .common import client, options, parser, resolve_model


def main(argv: list[str] | None = None) -> int:
    p = parser("Chat with /api/chat")
    p.add_argument("--system", default=None, help="a system message")
    args = p.parse_args(argv)
    c = client()
    model = resolve_model(c, args.model, args.no_fallback)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
    if args.stream:
        for part in c.chat(model=model, messages=messages, options=options(args), stream=True):
            sys.stdout.write(part.message.content or "")
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print(c.chat(model=model, messages=messages, options=options(args)).message.content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
