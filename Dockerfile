# The counter app: one static binary in a minimal image, the same image in
# every environment. Base images are build arguments so that a machine with
# no registry can supply its own (scripts/image does; see the README).
ARG GO_IMAGE=golang:1.26-alpine
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
# Empty is Go's own default (its go.env); scripts/image passes this
# machine's `go env GOPROXY`.
ARG GOPROXY=
ARG GOFLAGS=
ENV CGO_ENABLED=0 GOPROXY=${GOPROXY} GOFLAGS=${GOFLAGS}
WORKDIR /src
COPY go.mod go.sum ./
# The app's dependencies, downloaded and compiled in a layer of their own
# that only go.mod, go.sum and this list change: after a change to app/,
# only the app itself compiles. The list is the app's imports from outside
# the project (app/dockerfile_test.go keeps it so).
RUN go build -trimpath \
      github.com/prometheus/client_golang/prometheus \
      github.com/prometheus/client_golang/prometheus/promhttp \
      github.com/redis/go-redis/v9 \
      github.com/valyala/fasthttp \
      github.com/valyala/fasthttp/fasthttpadaptor
# The project's own packages the app imports, then the app
# (app/dockerfile_test.go keeps this list too).
COPY internal/welcome/ ./internal/welcome/
COPY app/ ./app/
RUN go build -trimpath -ldflags="-s -w" -o /out/app ./app

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/app /app
# 65532 is distroless's "nonroot"; with scratch it is simply a uid with no
# privileges and no home.
USER 65532:65532
ENV LISTEN_ADDR=:8080
EXPOSE 8080
ENTRYPOINT ["/app"]
