def test_plain_chat(client, fake):
    r = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello!"
    assert fake.received[0].json["model"] == "openai/gpt-4o"
