"""An MLflow pyfunc model around an exported policy directory (logged by rlx.mlflow_model).

This file is copied into the logged model and runs wherever the model is loaded: it imports
transformers and mlflow only, never rlx.

    model = mlflow.pyfunc.load_model("models:/<model id>")   # or models:/<registered name>/<version>
    model.predict(["T=17:"])                                   # -> ["<completion>"]
"""

import mlflow
from mlflow.pyfunc import PythonModel


class PolicyModel(PythonModel):
    """Completions of prompts by the exported causal LM, sampled with its generation_config.json."""

    def load_context(self, context):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = context.artifacts["policy"]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        """One completion per prompt, sampled as generation_config.json says (the run's rollouts)."""
        import torch

        bos, bos_text = self.tokenizer.bos_token_id, self.tokenizer.bos_token
        completions = []
        for prompt in list(model_input):  # as in training: <bos> + the prompt's tokens
            ids = ([bos] if bos is not None and not (bos_text and prompt.startswith(bos_text)) else []) \
                + self.tokenizer(prompt, add_special_tokens=False).input_ids
            output = self.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
            completions.append(self.tokenizer.decode(output[0, len(ids):], skip_special_tokens=True))
        return completions


mlflow.models.set_model(PolicyModel())
