"""Write the lab's replay data: the bundled base model's own greedy answers to general questions (lesson 10's `GENERAL_REPLAY`).

Mixing a model's *own* answers into fine-tuning data (rehearsal / self-distillation) asks it to keep answering those
questions as it did, instead of in the style of hand-written answers: the replay term the lab's variant table measures.
The questions are lesson 10's `GENERAL_QA` questions plus `EXTRA`, none of them in a validation or test set. Answers
that hit the token limit are cut after their last full sentence, so the model never learns to stop mid-sentence.

    python tools/make_replay.py > /tmp/replay.json        # then paste the list into nbs/10_lab_qlora.ipynb
"""
import json, re, sys
from learnft.models import offline, load_smollm2
offline()
from learnft import lab
from learnft.chat import generate

EXTRA = ['What is photosynthesis, in one sentence?', 'Name three fruits.', 'How do I make a cup of tea?', 'What is a noun?',
         'Give me a word that rhymes with cat.', 'Why is exercise good for you?', 'What is the plural of mouse?', 'What does a doctor do?',
         'Write a sentence about the ocean.', 'How many days are in a year?', 'What is the past tense of run?',
         'What are the three states of matter?', 'What does a thermometer measure?', 'Name a famous scientist.', 'What is a triangle?',
         'Suggest a name for a pet dog.', 'What is gravity?', 'How do bees help plants?', 'What is the largest continent?',
         'What is a volcano?', 'Why do we need to drink water?', 'Translate "hello" into Spanish.', 'What is a rainbow?',
         'Who was Albert Einstein?']

if __name__ == '__main__':
    held = set(lab.IDENTITY_VAL + lab.IDENTITY_TEST) | {q for q, _ in lab.RETENTION_VAL + lab.RETENTION_TEST}
    questions = [q for q, _ in lab.GENERAL_QA] + EXTRA
    assert not held & set(questions), held & set(questions)
    model, tok = load_smollm2()
    out = []
    for q in questions:
        r = generate(model, tok, None, q, max_new_tokens=64)
        a = r['reply'] if r['stopped'] else (re.match(r'(?s)(.*[.!?。！？])', r['reply']) or [None, r['reply']])[1]
        out.append((q, a.strip()))
        print(f'{q!r} -> {a[:80]!r}', file=sys.stderr)
    print(json.dumps(out, ensure_ascii=False, indent=0))
