"""A competent concurrent script, the strongest peer: a thread pool and botocore's adaptive
retries (client-side rate limiting that backs off on throttles), about 25 lines.

    python -m bench.competent ENDPOINT_URL POOL_ID drift|apply WORKERS [adaptive|standard]

Lists the pool, hands each page's users to the pool as soon as it is listed, reads each user
and, for apply, writes TOTP-preferred to every user not already TOTP-preferred (a rejected
write: no verified authenticator). Prints a JSON line of counts.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

TOTP = "SOFTWARE_TOKEN_MFA"


def main(argv: list[str]) -> int:
    endpoint_url, pool_id, mode, workers = argv[0], argv[1], argv[2], int(argv[3])
    retry_mode = argv[4] if len(argv) > 4 else "adaptive"
    client = boto3.session.Session().client(
        "cognito-idp",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 (dummy)
        config=Config(
            retries={"mode": retry_mode, "max_attempts": 10}, max_pool_connections=workers
        ),
    )
    lock = threading.Lock()
    counts = {"users": 0, "failed": 0, "writes": 0, "writes_rejected": 0}

    def one(username: str) -> None:
        try:
            user = client.admin_get_user(UserPoolId=pool_id, Username=username)
            if mode == "apply" and user.get("PreferredMfaSetting") != TOTP:
                try:
                    client.admin_set_user_mfa_preference(
                        UserPoolId=pool_id,
                        Username=username,
                        SoftwareTokenMfaSettings={"Enabled": True, "PreferredMfa": True},
                    )
                    key = "writes"
                except ClientError as exc:
                    if exc.response["Error"]["Code"] != "InvalidParameterException":
                        raise
                    key = "writes_rejected"
                with lock:
                    counts[key] += 1
            key = "users"
        except ClientError:
            key = "failed"
        with lock:
            counts[key] += 1

    futures: list[Future[None]] = []
    with ThreadPoolExecutor(workers) as pool:
        for page in client.get_paginator("list_users").paginate(
            UserPoolId=pool_id, PaginationConfig={"PageSize": 60}
        ):
            futures += [pool.submit(one, u["Username"]) for u in page["Users"]]
        for future in futures:
            future.result()
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
