import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError, ERRORS, GrpcStatus, toApiError } from '../../src/api/errors.js';

test('every registered error maps to an HTTP error status and a non-OK gRPC status', () => {
  for (const [code, spec] of Object.entries(ERRORS)) {
    assert.ok(spec.http >= 400 && spec.http < 600, `${code} http ${spec.http}`);
    assert.notEqual(spec.grpc, GrpcStatus.OK, `${code} grpc`);
  }
});

test('invalid() names the field in the body and in the message', () => {
  const err = ApiError.invalid('num_items', 'must be an integer in 1..500');
  assert.equal(err.httpStatus, 400);
  assert.equal(err.grpcStatus, GrpcStatus.INVALID_ARGUMENT);
  assert.deepEqual(err.toJSON(), {
    error: {
      code: 'invalid_argument',
      message: 'num_items: must be an integer in 1..500',
      field: 'num_items',
    },
  });
});

test('toApiError keeps ApiErrors and turns anything else into internal', () => {
  const nf = new ApiError('not_found', 'item x');
  assert.equal(toApiError(nf), nf);
  const wrapped = toApiError(new TypeError('boom'));
  assert.equal(wrapped.code, 'internal');
  assert.equal(wrapped.httpStatus, 500);
  assert.equal(wrapped.toJSON().error.field, undefined);
});
