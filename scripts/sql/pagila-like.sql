-- A Pagila-like sample dataset, generated (no download), deterministic (setseed), sized by
-- the psql variable :scale (1 = ~60k rows). It exercises what a migration check must get
-- right: serial, bigserial, uuid and composite keys, text with non-ASCII characters and a
-- "C"-collated key, numeric, timestamptz, arrays, jsonb, bytea, NULLs and empty strings,
-- foreign keys, and one table without a primary key.
\set ON_ERROR_STOP on
SELECT setseed(0.42);
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE language (
  language_id smallserial PRIMARY KEY,
  name        char(20) NOT NULL,
  last_update timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00'
);
INSERT INTO language (name) VALUES ('English'), ('Italiano'), ('日本語'), ('Deutsch'), ('Français'), ('Português');

CREATE TABLE city (
  city_id uuid PRIMARY KEY,
  name    text COLLATE "C" NOT NULL UNIQUE,
  country text NOT NULL
);
INSERT INTO city
SELECT md5('city' || g)::uuid,
       (ARRAY['Zürich', 'São Paulo', 'Kraków', '東京', 'Montréal', 'Αθήνα', 'Reykjavík', 'Łódź'])[1 + g % 8] || ' ' || g,
       (ARRAY['CH', 'BR', 'PL', 'JP', 'CA', 'GR', 'IS', 'PL'])[1 + g % 8]
FROM generate_series(1, 200 * :scale) g;

CREATE TABLE actor (
  actor_id    serial PRIMARY KEY,
  first_name  text NOT NULL,
  last_name   text NOT NULL,
  last_update timestamptz NOT NULL
);
INSERT INTO actor (first_name, last_name, last_update)
SELECT (ARRAY['PENELOPE', 'NICK', 'ED', 'JENNIFER', 'JOHNNY', 'BETTE', 'GRACE', 'Zoë'])[1 + g % 8],
       (ARRAY['GUINESS', 'WAHLBERG', 'CHASE', 'DAVIS', 'LOLLOBRIGIDA', 'NICHOLSON', 'MOSTEL', 'Ñúñez'])[1 + (g * 7) % 8],
       timestamptz '2025-01-01 00:00:00+00' + g * interval '37 minutes'
FROM generate_series(1, 200 * :scale) g;

CREATE TABLE film (
  film_id          serial PRIMARY KEY,
  title            text NOT NULL,
  description      text,
  release_year     int,
  language_id      smallint NOT NULL REFERENCES language,
  rental_rate      numeric(4, 2) NOT NULL,
  length           smallint,
  rating           text CHECK (rating IN ('G', 'PG', 'PG-13', 'R', 'NC-17')),
  special_features text[],
  attributes       jsonb,
  last_update      timestamptz NOT NULL
);
INSERT INTO film (title, description, release_year, language_id, rental_rate, length, rating,
                  special_features, attributes, last_update)
SELECT 'FILM ' || g,
       CASE WHEN g % 17 = 0 THEN NULL WHEN g % 19 = 0 THEN '' ELSE 'A ' || md5(g::text) || ' story' END,
       1990 + g % 35,
       1 + g % 6,
       (0.99 + (g % 5))::numeric(4, 2),
       CASE WHEN g % 23 = 0 THEN NULL ELSE 45 + g % 140 END,
       (ARRAY['G', 'PG', 'PG-13', 'R', 'NC-17'])[1 + g % 5],
       CASE WHEN g % 4 = 0 THEN NULL ELSE (ARRAY['Trailers', 'Commentaries', 'Deleted Scenes', 'Behind the Scenes'])[1:1 + g % 4] END,
       jsonb_build_object('score', round((random() * 10)::numeric, 2), 'tags', jsonb_build_array('t' || g % 5, 'x|y'), 'note', CASE WHEN g % 11 = 0 THEN NULL ELSE 'n' END),
       timestamptz '2025-06-01 00:00:00+00' + g * interval '1 hour'
FROM generate_series(1, 1000 * :scale) g;

CREATE TABLE film_actor (
  actor_id    int NOT NULL REFERENCES actor,
  film_id     int NOT NULL REFERENCES film,
  last_update timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00',
  PRIMARY KEY (actor_id, film_id)
);
INSERT INTO film_actor (actor_id, film_id)
SELECT DISTINCT 1 + (f * 13 + k * 101) % (200 * :scale), f
FROM generate_series(1, 1000 * :scale) f, generate_series(1, 5) k;

CREATE TABLE customer (
  customer_id serial PRIMARY KEY,
  store_id    smallint NOT NULL,
  first_name  text NOT NULL,
  last_name   text NOT NULL,
  email       text,
  city_id     uuid REFERENCES city,
  active      boolean NOT NULL,
  create_date date NOT NULL,
  last_update timestamptz
);
INSERT INTO customer (store_id, first_name, last_name, email, city_id, active, create_date, last_update)
SELECT 1 + g % 2, 'First' || g, 'Last' || (g % 97),
       CASE WHEN g % 13 = 0 THEN NULL ELSE 'c' || g || '@example.com' END,
       md5('city' || (1 + g % (200 * :scale)))::uuid,
       g % 10 <> 0,
       date '2024-01-01' + g % 700,
       CASE WHEN g % 29 = 0 THEN NULL ELSE timestamptz '2026-02-01 00:00:00+00' + g * interval '1 second' END
FROM generate_series(1, 600 * :scale) g;

CREATE TABLE rental (
  rental_id    bigserial PRIMARY KEY,
  rental_date  timestamptz NOT NULL,
  film_id      int NOT NULL REFERENCES film,
  customer_id  int NOT NULL REFERENCES customer,
  return_date  timestamptz,
  last_update  timestamptz NOT NULL
);
INSERT INTO rental (rental_date, film_id, customer_id, return_date, last_update)
SELECT timestamptz '2025-01-01 00:00:00+00' + g * interval '17 minutes',
       1 + (g * 31) % (1000 * :scale),
       1 + (g * 7) % (600 * :scale),
       CASE WHEN g % 9 = 0 THEN NULL ELSE timestamptz '2025-01-01 00:00:00+00' + g * interval '17 minutes' + (1 + g % 7) * interval '1 day' END,
       timestamptz '2026-03-01 00:00:00+00'
FROM generate_series(1, 16000 * :scale) g;

CREATE TABLE payment (
  payment_id   bigserial PRIMARY KEY,
  customer_id  int NOT NULL REFERENCES customer,
  rental_id    bigint REFERENCES rental,
  amount       numeric(5, 2) NOT NULL,
  payment_date timestamptz NOT NULL
);
INSERT INTO payment (customer_id, rental_id, amount, payment_date)
SELECT r.customer_id, r.rental_id, (0.99 + (r.rental_id % 9))::numeric(5, 2), r.rental_date + interval '5 minutes'
FROM rental r WHERE r.rental_id % 10 <> 3;

-- No primary key on purpose: a migration check must still cover it.
CREATE TABLE film_poster (
  film_id int NOT NULL,
  poster  bytea,
  caption text
);
INSERT INTO film_poster
SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text) || md5((g + 1)::text), 'hex') END,
       CASE WHEN g % 3 = 0 THEN '' WHEN g % 3 = 1 THEN NULL ELSE 'poster ' || g END
FROM generate_series(1, 300 * :scale) g;

ANALYZE;
