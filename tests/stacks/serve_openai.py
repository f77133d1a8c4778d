"""gemma serve through the official openai client (as users call it): prints one JSON object with the non-streamed
and streamed chat replies, a completion, and the model list. Usage: serve_openai.py BASE_URL PROMPT MAX_TOKENS"""
import json
import sys

from openai import OpenAI

base_url, prompt, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = OpenAI(base_url=base_url, api_key="sesame")
messages = [{"role": "user", "content": prompt}]
chat = client.chat.completions.create(model="gemma", messages=messages, max_tokens=max_tokens, temperature=0)
stream = client.chat.completions.create(
    model="gemma", messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
    stream_options={"include_usage": True})
pieces, usage = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
completion = client.completions.create(model="gemma", prompt=prompt, max_tokens=max_tokens, temperature=0)
print(json.dumps({
    "chat": chat.choices[0].message.content,
    "finish_reason": chat.choices[0].finish_reason,
    "completion_tokens": chat.usage.completion_tokens,
    "stream": "".join(pieces),
    "stream_usage": usage,
    "completion": completion.choices[0].text,
    "models": [m.id for m in client.models.list()],
}))
