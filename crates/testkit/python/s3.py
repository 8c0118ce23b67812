"""The tests' S3 client (boto3, signed like any production client) for the moto server:

    s3.py ENDPOINT BUCKET keys PREFIX          one key per line
    s3.py ENDPOINT BUCKET get KEY              the object's bytes on stdout
    s3.py ENDPOINT BUCKET put KEY              stdin becomes the object
    s3.py ENDPOINT BUCKET grep PREFIX HEX      keys under PREFIX whose bytes contain HEX's bytes
    s3.py ENDPOINT BUCKET mkbucket
"""
import sys

import boto3


def main():
    endpoint, bucket, command, *args = sys.argv[1:]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    def keys(prefix):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                yield o["Key"]

    if command == "mkbucket":
        s3.create_bucket(Bucket=bucket)
    elif command == "keys":
        for k in keys(args[0]):
            print(k)
    elif command == "get":
        sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=args[0])["Body"].read())
    elif command == "put":
        s3.put_object(Bucket=bucket, Key=args[0], Body=sys.stdin.buffer.read())
    elif command == "grep":
        needle = bytes.fromhex(args[1])
        for k in keys(args[0]):
            if needle in s3.get_object(Bucket=bucket, Key=k)["Body"].read():
                print(k)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
