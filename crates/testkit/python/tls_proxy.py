"""A TLS front for a plaintext broker: accepts TLS on 127.0.0.1:PORT with CERT/KEY and pipes
each connection's bytes to 127.0.0.1:UPSTREAM. The broker behind it advertises PORT, so a
Kafka client sees a broker that speaks TLS end to end (SASL runs inside the TLS stream,
untouched). Prints "ready" once listening.

The test broker (tansu 0.6) has TLS options, but its command line refuses --cert together with
--key, so it cannot serve TLS itself."""
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main():
    port, upstream, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handle(client_reader, client_writer):
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
