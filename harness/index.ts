// What the tests and the benchmarks share: the stack they run against, Bakery's roles as real
// processes, and orders through the HTTP API. It imports from src/ only; test/ and bench/ import
// it and never each other.
export * from './orders'
export * from './redis-cluster'
export * from './roles'
export * from './stack'
export * from './wait'
