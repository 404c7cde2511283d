// The gRPC settings of `recserve serve`: defaults, precedence, and the ephemeral-port rule.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/index.js';

test('gRPC defaults: on, 127.0.0.1:50051, 1 MiB messages, 256 streams, 60 s keepalive', () => {
  const c = loadConfig([], {});
  assert.equal(c.grpcEnabled, true);
  assert.equal(c.grpcHost, '127.0.0.1');
  assert.equal(c.grpcPort, 50051);
  assert.equal(c.grpcMaxMessageBytes, 1024 * 1024);
  assert.equal(c.grpcMaxConcurrentStreams, 256);
  assert.equal(c.grpcKeepaliveMs, 60_000);
});

test('an ephemeral HTTP port makes the gRPC port ephemeral unless one is given', () => {
  assert.equal(loadConfig(['--port', '0'], {}).grpcPort, 0);
  assert.equal(loadConfig(['--port', '0', '--grpc-port', '7001'], {}).grpcPort, 7001);
  assert.equal(loadConfig(['--port', '0'], { RECSERVE_GRPC_PORT: '7002' }).grpcPort, 7002);
  assert.equal(loadConfig(['--port', '9000', '--grpc-port', '0'], {}).grpcPort, 0);
});

test('flags beat the environment; bad values name the setting', () => {
  const c = loadConfig(['--grpc-host', '0.0.0.0', '--no-grpc'], { RECSERVE_GRPC_HOST: '::1' });
  assert.equal(c.grpcHost, '0.0.0.0');
  assert.equal(c.grpcEnabled, false);
  assert.throws(
    () => loadConfig(['--grpc-port', '70000'], {}),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /grpc-port/);
      return true;
    },
  );
  assert.throws(() => loadConfig(['--grpc-max-concurrent-streams', '0'], {}), ConfigError);
});
