"""One planted secret of every format ``sft.rules.secrets`` supports (fake values in the real shapes).

Shared by the rule tests (tests/convert/test_convert_secrets_rules.py) and the pipeline leak test
(tests/robustness/test_secrets_never_leak.py). Each sample is a line as an agent would see it (an env
dump, a config file, a connection string); ``secret`` is the part that must not survive, ``rule`` the
name the report counts it under, ``plugin`` the detect-secrets detector that finds it too (the oracle).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    format: str
    line: str
    secret: str
    rule: str
    plugin: str | None = None  # detect-secrets class in detect_secrets.plugins.<module>, "module:Class"


def _sample(format: str, template: str, secret: str, rule: str, plugin: str | None = None) -> Sample:
    return Sample(format, template.format(secret=secret), secret, rule, plugin)


PEM_LINES = (
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKB",
    "xIuOAOIiF0iGMT2DbeSLXP9HmHGc1Jh4gMmz3eXoQ0bQGY9zHsRQk3cJv1nDaW5Z",
)
AZURE_KEY = "Pl4nt3dAzureStorageKey" * 4  # 88 characters
SAMPLES: tuple[Sample, ...] = (
    _sample("openai", "OPENAI_API_KEY={secret}", "sk-" + "T3BlbkFJ" * 6, "openai"),
    _sample("openai_project", "OPENAI_PROJECT_KEY={secret}", "sk-proj-" + "Zq81_Lm-" * 10, "openai"),
    _sample(
        "openai_legacy_marker",
        "key: {secret}",
        "sk-" + "a1B2c3D4e5" * 2 + "T3BlbkFJ" + "f6G7h8J9k0" * 2,
        "openai",
        "openai:OpenAIDetector",
    ),
    _sample("anthropic", "ANTHROPIC_API_KEY={secret}", "sk-ant-api03-" + "pL4n7_eD-" * 10, "anthropic"),
    _sample(
        "huggingface", "HF_HUB_TOKEN={secret}", "hf_" + "PlantedHubToken0123456789abcdefgh", "huggingface"
    ),
    _sample(
        "github_classic",
        "GH_TOKEN={secret}",
        "ghp_" + "PlantedGitHubToken0123456789abcdefgh",
        "github",
        "github_token:GitHubTokenDetector",
    ),
    _sample(
        "github_fine_grained",
        "GITHUB_PAT={secret}",
        "github_pat_" + "11PLANTED0_" + "abcdefghij" * 6,
        "github",
    ),
    _sample(
        "gitlab",
        "GITLAB_TOKEN={secret}",
        "glpat-" + "Pl4ntedGitLabTok3n-x9",
        "gitlab",
        "gitlab_token:GitLabTokenDetector",
    ),
    _sample(
        "gitlab_trigger",
        "CI_TRIGGER={secret}",
        "glptt-" + "Pl4ntedGitLabTrigger" * 2,
        "gitlab",
        "gitlab_token:GitLabTokenDetector",
    ),
    _sample(
        "aws_access_key_id",
        "AWS_ACCESS_KEY_ID={secret}",
        "AKIA" + "PLANTEDKEY123456",
        "aws_access_key_id",
        "aws:AWSKeyDetector",
    ),
    _sample(
        "aws_access_key_id_abia",
        "key id {secret}",
        "ABIA" + "PLANTEDKEY654321",
        "aws_access_key_id",
        "aws:AWSKeyDetector",
    ),
    _sample(
        "aws_secret_access_key",
        "aws_secret_access_key = {secret}",
        "wJalrXUtnPLANTED/K7MDENG/bPxRfiCYPLANTED",
        "aws_secret_access_key",
    ),
    _sample(
        "aws_secret_quoted",
        'AWS_SECRET_KEY="{secret}"',
        "Pl4nt3dAwsSecretQuoted0123456789abcdEFGH",
        "aws_secret_access_key",
        "aws:AWSKeyDetector",
    ),
    _sample(
        "azure_storage_key",
        "DefaultEndpointsProtocol=https;AccountName=x;AccountKey={secret};",
        AZURE_KEY,
        "azure_storage_key",
        "azure_storage_key:AzureStorageKeyDetector",
    ),
    _sample(
        "google_api_key",
        "GOOGLE_API_KEY={secret}",
        "AIza" + "SyPlantedGoogleKey0123456789abcdEF-",
        "google_api_key",
    ),
    _sample(
        "stripe",
        "STRIPE_SECRET_KEY={secret}",
        "sk_live_" + "PlantedStripeKey01234567",
        "stripe",
        "stripe:StripeDetector",
    ),
    _sample(
        "url_password",
        "DATABASE_URL=postgres://app_user:{secret}@db.internal:5432/app",
        "Pl4ntedDbPassw0rd",
        "url_password",
        "basic_auth:BasicAuthDetector",
    ),
    _sample(
        "jwt",
        "session cookie {secret} set",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJwbGFudGVkIn0.UGxhbnRlZEp3dFNpZ25hdHVyZQ",
        "jwt",
        "jwt:JwtTokenDetector",
    ),
    _sample(
        "npmrc",
        "//registry.npmjs.org/:_authToken={secret}",
        "npm_" + "PlantedNpmrcToken0123456789abcdefghi",
        "npm",
        "npm:NpmDetector",
    ),
    _sample("npm_token", "NPM_TOKEN={secret}", "npm_" + "PlantedNpmToken0123456789abcdefghijk", "npm"),
    _sample(
        "pypi",
        "password = {secret}",
        "pypi-AgEIcHlwaS5vcmc" + "Pl4ntedPyPIUploadToken0123456789" * 3,
        "pypi",
        "pypi_token:PypiTokenDetector",
    ),
    _sample(
        "sendgrid",
        "SENDGRID_API_KEY={secret}",
        "SG." + "Pl4ntedSendGridKeyId01" + "." + "Pl4ntedSendGridSecret0123456789abcdefghijkl",
        "sendgrid",
        "sendgrid:SendGridDetector",
    ),
    _sample(
        "slack",
        "SLACK_BOT_TOKEN={secret}",
        "xoxb-" + "1234567890-0987654321-PlantedSlackTokenValue",
        "slack",
        "slack:SlackDetector",
    ),
    _sample(
        "slack_webhook",
        "SLACK_WEBHOOK={secret}",
        "https://hooks.slack.com/services/T0PLANTED/B0PLANTED/Pl4ntedWebhookSecret",
        "slack_webhook",
        "slack:SlackDetector",
    ),
    _sample(
        "square",
        "SQUARE_SECRET={secret}",
        "sq0csp-" + "Pl4ntedSquareOAuthSecret0123456789abcdefghi",
        "square",
        "square_oauth:SquareOAuthDetector",
    ),
    _sample(
        "bearer_token",
        "curl -H 'Authorization: Bearer {secret}' https://api.example.com",
        "Pl4ntedOpaqueBearerToken.0123456789",
        "authorization",
    ),
    _sample(
        "private_key",
        "-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----",
        "\n".join(PEM_LINES),
        "private_key",
    ),
)
