"""The end of `make demo`: the official `openai` client's moderation call on the demo inputs, against the
HTTP front `duelguard serve` started, checked against `duelguard predict`'s decisions on the same inputs.

    python services/client/openai_moderation.py --inputs services/client/demo_inputs.jsonl \
        --predicted build/demo/predict.jsonl [--base-url http://127.0.0.1:8080/v1]

`messages` inputs are flattened as `predict` flattens them ("role: content" lines). The bearer token, when
the front has one, is read from $DUELGUARD_HTTP_TOKEN. Exit status 1 when a decision differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--predicted", type=Path, required=True, help="`duelguard predict` output on --inputs")
    parser.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    args = parser.parse_args()

    import openai

    from duelguard.classifier.inference import text_of

    objs = [json.loads(line) for line in args.inputs.read_text(encoding="utf-8").splitlines() if line.strip()]
    predicted = [json.loads(line) for line in args.predicted.read_text(encoding="utf-8").splitlines() if line.strip()]
    client = openai.OpenAI(base_url=args.base_url, api_key=os.environ.get("DUELGUARD_HTTP_TOKEN") or "unused",
                           max_retries=0)
    reply = client.moderations.create(model="duelguard", input=[text_of(obj) for obj in objs])
    print(f"openai client -> {args.base_url}/moderations: model {reply.model}, {len(reply.results)} results")
    differ = 0
    for obj, result, pred in zip(objs, reply.results, predicted):
        same = result.flagged == pred["unsafe"]
        differ += not same
        scores = result.model_dump()["category_scores"]
        top = max(("violence", "hate", "illicit", "self-harm", "sexual"), key=lambda n: scores[n])
        print(f"  {str(obj.get('id', '')):<16} flagged={result.flagged!s:<5} predict unsafe={pred['unsafe']!s:<5} "
              f"{'same' if same else 'DIFFERENT'}  (top OpenAI category {top} {scores[top]:.3f})")
    if len(reply.results) != len(predicted) or differ:
        print(f"{differ} decision(s) differ from duelguard predict", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
