// `application/x-flatbuffers` for the HTTP front end's codec registry
// (transport/http/codec.ts): recommendations and similar only, the routes whose responses
// are large enough for the binary form to pay; feedback stays JSON (the registry answers
// 415 / 406 there, naming JSON).
import type { Codec, Route } from '../http/codec.js';
import type { RecommendationResponse, SimilarResponse } from '../../api/types.js';
import {
  decodeRecommendationRequest,
  decodeSimilarRequest,
  encodeRecommendationResponse,
  encodeSimilarResponse,
} from './codec.js';

export const FLATBUFFERS_MEDIA_TYPE = 'application/x-flatbuffers';

export const flatbuffersCodec: Codec = {
  mediaType: FLATBUFFERS_MEDIA_TYPE,
  supports: (route: Route) => route === 'recommendations' || route === 'similar',
  decode(route, bytes) {
    return route === 'recommendations'
      ? decodeRecommendationRequest(bytes)
      : decodeSimilarRequest(bytes);
  },
  encode(route, value) {
    return route === 'recommendations'
      ? encodeRecommendationResponse(value as RecommendationResponse)
      : encodeSimilarResponse(value as SimilarResponse);
  },
};
