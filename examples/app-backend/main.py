"""The Health Navigator backend switching from a paid LLM API to the fine-tuned model.

Before (roadmap): ``llm = PaidAPIClient(api_key=...)`` and ``llm.invoke(prompt)``.
After: ``CustomMedicalLLM`` keeps ``invoke(prompt) -> str`` and adds ``assess(...)``, which
returns risk level, red flags and a disclaimer from the deterministic safety layer.

Run: HEALTHNAV_BASE_URL=http://navigator-serve-svc.healthnav.svc:8000 HEALTHNAV_API_KEY=... \
     HEALTHNAV_MODEL=triage-v3 uvicorn main:app
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel, Field

from healthnav.serving.client import CustomMedicalLLM

app = FastAPI(title="AI Health Navigator backend")

# One client for the process: it pools connections, retries 429/503 with Retry-After, and
# reads HEALTHNAV_BASE_URL / HEALTHNAV_API_KEY / HEALTHNAV_MODEL from the environment.
llm = CustomMedicalLLM(timeout=float(os.environ.get("HEALTHNAV_TIMEOUT", "30")))


class SymptomAssessment(BaseModel):
    symptoms: str = Field(min_length=3, max_length=4000)
    age: int | None = Field(default=None, ge=0, le=130)
    sex: str | None = None
    duration: str | None = None
    history: str | None = None
    medications: str | None = None


@app.post("/assessments")
def assess(body: SymptomAssessment) -> dict:
    # was: answer = paid_api.invoke(render_my_prompt(body)); parse it by hand
    return llm.assess(**body.model_dump(exclude_none=True))


@app.post("/ask")
def ask(question: str) -> dict:
    return {"answer": llm.invoke(question)}
