// Loads proto/recserve/v1/recommendation.proto once, for the server and the client alike.
//
// The loader options are chosen so that a decoded message is the REST contract's JSON shape
// (api/types.ts): field names kept as written (snake_case), int32 as JS numbers, and fields
// that were not sent left out (defaults: false) instead of filled with zeros. With the
// one-member oneofs of the .proto that makes "absent" and "zero" distinct, which is what
// lets api/validate.ts judge a gRPC message exactly as it judges a JSON body.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import type { RecommendationResponse } from '../../api/types.js';
import { projectRoot } from '../../retrieval/native.js';
import { requestDecoder } from './decode.js';
import { frameInPlace } from './fast.js';
import { encodeRecommendationHead, encodeRecommendations } from './head.js';

export const SERVICE_NAME = 'recserve.v1.RecommendationService';
export const PROTO_FILE = 'recserve/v1/recommendation.proto';

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: false,
  arrays: false,
  objects: false,
  oneofs: false,
};

/** Directory holding recserve/v1/*.proto (what protoc's -I should name). */
export function protoDir(): string {
  return join(projectRoot(), 'proto');
}

let pkg: protoLoader.PackageDefinition | undefined;

/**
 * recserve's service plus grpc.health.v1 in one package definition: server reflection
 * describes exactly what this definition holds, so stock tools (grpcurl, grpc_cli) can
 * discover both services.
 */
export function packageDefinition(): protoLoader.PackageDefinition {
  if (!pkg) {
    pkg = protoLoader.loadSync([PROTO_FILE, healthProtoPath], {
      ...LOADER_OPTIONS,
      includeDirs: [protoDir()],
    });
  }
  return pkg;
}

export function serviceDefinition(): grpc.ServiceDefinition {
  return packageDefinition()[SERVICE_NAME] as grpc.ServiceDefinition;
}

/**
 * The definition the SERVER registers: as serviceDefinition(), except in two places.
 *
 * Requests are decoded by decode.ts's strict decoder, which checks every byte (string
 * lengths, UTF-8, wire types) where protobufjs's is lenient, and never throws: bad bytes
 * arrive at the handler as an ApiError (malformed_body) to answer INVALID_ARGUMENT with
 * recserve's trailers, where a throw would be grpc-js's INTERNAL.
 *
 * GetRecommendations serializes the JSON contract's response itself, in two parts: the item
 * list and the rest. Protobuf allows a message's fields to arrive in any order and
 * concatenated encodings to merge, so `head ++ items` is one valid message. A cache hit
 * shares its item list (the same array) with every other hit on that entry
 * (pipeline/cache.ts), so the list is encoded once per cache entry and only the small head
 * per request; this is most of a cached call's serialization cost. Both parts are written
 * by head.ts, byte for byte what protobufjs writes, at a fraction of its cost.
 */
export function serverServiceDefinition(): grpc.ServiceDefinition {
  const base = serviceDefinition();
  const pkgName = SERVICE_NAME.slice(0, SERVICE_NAME.lastIndexOf('.') + 1);
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, m] of Object.entries(base)) {
    const type = (m as { requestType?: { type?: { name?: string } } }).requestType?.type?.name;
    if (!type) throw new Error(`proto.ts: ${name} has no request type name`);
    const requestDeserialize = requestDecoder(packageDefinition(), pkgName + type);
    out[name] = { ...m, requestDeserialize };
  }
  const encode = recommendationEncoder();
  const responseSerialize = (res: unknown): Buffer => encode(res as RecommendationResponse, 0);
  out.GetRecommendations = { ...out.GetRecommendations!, responseSerialize };
  return out;
}

/**
 * GetRecommendations' response as one gRPC frame (fast.ts), written in one buffer: the
 * same bytes as serverServiceDefinition's serializer, after the 5-byte frame prefix.
 */
export function recommendationFrame(): (res: unknown) => Buffer {
  const encode = recommendationEncoder();
  return (res) => frameInPlace(encode(res as RecommendationResponse, 5));
}

/** The encoder both serializers share: per-entry item lists cached, the head per call. */
function recommendationEncoder(): (res: RecommendationResponse, gap: number) => Buffer {
  const encodedItems = new WeakMap<object, Buffer>();
  return (res, gap) => {
    let items = encodedItems.get(res.recommendations);
    if (!items) {
      items = encodeRecommendations(res.recommendations);
      // Only a cached answer's list comes back; a fresh list is encoded once and dropped.
      if (res.metadata.cache_hit) encodedItems.set(res.recommendations, items);
    }
    // The head is written by hand straight in front of the items (head.ts says why).
    return encodeRecommendationHead(res, items, gap);
  };
}

/** The generated client constructor for RecommendationService. */
export function serviceClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeClientConstructor(serviceDefinition(), SERVICE_NAME);
}
