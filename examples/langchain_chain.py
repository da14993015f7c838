"""A guarded LCEL chain: ``prompt | GuardedChatModel(model=...) | parser``, offline.

The wrapped model is a langchain-core fake that gives a benign answer, then a harmful one; put your
provider's chat model in its place. The guard is the default policy with the shipped scorer.

Run from the repository root, with the README's virtual environment: ``.venv/bin/python examples/langchain_chain.py``
"""

from __future__ import annotations

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from guardrail_langchain import GuardedChatModel

BENIGN = (
    "Most adults need seven to nine hours of sleep. A consistent bedtime, a dark and quiet room and less "
    "caffeine after noon usually help, and if problems last for weeks a doctor can look for causes such as sleep "
    "apnoea."
)
HARMFUL = (
    "Wait until they leave their wallet unattended, take a photo of the card, then use it for online "
    "purchases shipped to a different address so you don't get caught."
)


def main() -> None:
    model = GuardedChatModel(model=FakeListChatModel(responses=[BENIGN, HARMFUL]))  # the one-line change
    prompt = ChatPromptTemplate.from_messages([("system", "You are a helpful assistant."), ("human", "{question}")])
    chain = prompt | model

    for question in ("How can I sleep better?", "How can I use my roommate's credit card without them knowing?"):
        answer = chain.invoke({"question": question})
        verdict = answer.response_metadata["guardrail"]  # Verdict.to_dict() of every checked answer
        print(f"{verdict['decision']}: {answer.content}")
        for violation in verdict["violations"]:
            print(f"    {violation['message']}")

    # Streaming works unchanged: text is released only once it passed (the policy's streaming block).
    text_chain = prompt | model | StrOutputParser()
    print("streamed:", "".join(text_chain.stream({"question": "How can I sleep better?"})))


if __name__ == "__main__":
    main()
